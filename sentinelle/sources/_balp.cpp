// Compiled fast path of the FHIR AuditEvent NDJSON reader (IHE BALP shapes).
//
// Why: reading is the first cost of every stage (scan, service, incident), and on this
// project's 2-core machines the Python normaliser spent ~15 us per simulated event on
// top of a ~4 us msgspec decode; this path takes ~6-8 us in all. This module parses one
// NDJSON line with simdjson's On-Demand API (Debian's libsimdjson-dev) and builds the
// AccessEvent itself, for the common shape only: a BALP R4 AuditEvent with `recorded`,
// plain entities and no R5/STU3 elements. Anything else, and anything it is not sure
// of, it *declines* (returns None) and the Python path in fhir_common/fhir_json reads
// the line as before, with the same quarantine messages. Where it answers, it answers
// exactly what `Normaliser.from_lazy` answers (tests/sources/test_balp_fast.py checks
// every field on simulated hospitals, the published samples and generated variations).
//
// The repeated parts (agents, source, event codes, outcome, purpose) are not interpreted
// here: their raw JSON is the key of a memo of Python `_Context` objects, computed by the
// Python normaliser on a miss. Session ids sit inside the user's agent and change at
// every login, so they are cut out of the key (the value is blanked, the context computed
// from the blanked agents) and put back per event, the way `combine` chooses a session.
//
// Exact reproduction of Python's rules is the contract; the comments name the Python
// function each block mirrors.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <simdjson.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#define BALP_STR_(x) #x
#define BALP_STR(x) BALP_STR_(x)

using namespace simdjson;

namespace {

constexpr std::string_view OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role";
constexpr std::string_view AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
// Bounds of the memo tables (entries). Agent arrays are ~1 KB: the tables stay under
// ~60 MB together, whatever the size of the input; a full table is simply cleared.
constexpr size_t MEMO_LIMIT = 65536;   // contexts (keys of ~0.4 KB)
constexpr size_t SERIAL_LIMIT = 32768;  // agent arrays with sessions blanked
constexpr size_t CUT_LIMIT = 8192;      // agent arrays as they come (one per session)

// Thrown internally to decline a line: the Python path reads it.
struct Decline {};

// A memoised context: the fields of fhir_common._Context, as new references.
struct Ctx {
    PyObject *account, *actor_kind, *client, *source, *auth, *session, *purpose, *outcome;
    PyObject *action;  // NULL when the context's action is None
    PyObject *address, *addr_search, *addr_other;
    bool error;
};

void ctx_release(Ctx &c) {
    Py_XDECREF(c.account); Py_XDECREF(c.actor_kind); Py_XDECREF(c.client); Py_XDECREF(c.source);
    Py_XDECREF(c.auth); Py_XDECREF(c.session); Py_XDECREF(c.purpose); Py_XDECREF(c.outcome);
    Py_XDECREF(c.action); Py_XDECREF(c.address); Py_XDECREF(c.addr_search); Py_XDECREF(c.addr_other);
}

// Hash of strings that also takes string_views (C++20 heterogeneous lookup): no copy of a
// 1 KB agent array just to look it up.
struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

enum Part { AGENT, SOURCE, TYPE, SUBTYPE, CATEGORY, CODE, OUTCOME, PURPOSE, AUTHORIZATION, N_PARTS };

struct Extracted;

struct AgentCut {
    uint64_t serial;       // names this agent array in the context memo's keys (never reused)
    bool cut;              // a session value was blanked
    std::string blanked;   // the agents with the session values blanked (when cut)
    std::string session;   // the event's session per `combine` ("" when none)
};

struct FastObject {
    PyObject_HEAD
    PyObject *context_of;      // callable(agent, source, type, subtype, category, code, outcome,
                               //          purpose, authorization, action, outcomeDesc) -> _Context
    PyObject *query_categories;  // fhir_common.query_categories
    PyObject *event_type;      // sentinelle.events.AccessEvent
    PyObject *declines;        // exception classes that mean "let Python read this line"
    PyObject *search, *other;  // Action.SEARCH, Action.OTHER
    std::unordered_map<std::string, int> *categories;  // RESOURCE_CATEGORIES
    std::unordered_set<std::string> *data_roles;      // _DATA_ROLES
    long mask_identity, mask_contact, mask_national;
    std::unordered_map<std::string, Ctx, TextHash, std::equal_to<>> *memo;
    ondemand::parser *parser;
    ondemand::parser *agent_parser;
    std::string *buffer;        // the line or lines, padded for simdjson
    Extracted *extracted;       // what `extract` found in the current line
    std::string *agent_buffer;  // the agent array, padded, when sessions are looked for
    std::string *key;           // scratch: the memo key
    // What was cut from each distinct raw agent array (the blanked array, the session):
    // agents repeat for a whole session, so most lines skip the second parse.
    std::unordered_map<std::string, AgentCut, TextHash, std::equal_to<>> *cuts;
    // Serial numbers of the blanked agent arrays (one per user, address and client, not
    // per session): the context memo's keys name agents by these.
    std::unordered_map<std::string, uint64_t, TextHash, std::equal_to<>> *serials;
    uint64_t next_serial;
    // The previous line's memo key and context (reset when the memo is cleared).
    std::string *last_key;
    const Ctx *last_ctx;
    Py_ssize_t hits, misses, declined;
    bool busy;  // a line is being read: a second caller (another thread, during a Python
                // callback) is declined rather than sharing the buffers
};

// Lines longer than this go to the Python path: simdjson's parser keeps the capacity of
// the largest document it has seen, and a hostile 50 MB line must not pin ~200 MB.
constexpr size_t LINE_LIMIT = 1 << 20;

// -- small helpers -----------------------------------------------------------------------

// True when nothing but whitespace follows the value just read (msgspec rejects trailing data).
inline bool at_end(ondemand::document &doc) {
    const char *where;
    return doc.current_location().get(where) != SUCCESS;
}

inline std::string_view need_string(ondemand::value v) {
    std::string_view s;
    if (v.get_string().get(s)) throw Decline{};
    return s;
}

// Raw JSON of any value, without trailing whitespace (msgspec.Raw keeps exactly the value).
std::string_view raw_of(ondemand::value v) {
    ondemand::json_type t;
    if (v.type().get(t)) throw Decline{};
    std::string_view raw;
    if (t == ondemand::json_type::object) {
        ondemand::object o;
        if (v.get_object().get(o) || o.raw_json().get(raw)) throw Decline{};
    } else if (t == ondemand::json_type::array) {
        ondemand::array a;
        if (v.get_array().get(a) || a.raw_json().get(raw)) throw Decline{};
    } else {
        // A scalar: its token, then make sure it is a well-formed one (strings are
        // checked by unescaping; msgspec would reject a bad literal).
        raw = v.raw_json_token();
        if (t == ondemand::json_type::string) {
            std::string_view s;
            if (v.get_string().get(s)) throw Decline{};
        } else if (t == ondemand::json_type::number) {
            double d;
            if (v.get_double().get(d)) throw Decline{};
        } else if (t == ondemand::json_type::boolean) {
            bool b;
            if (v.get_bool().get(b)) throw Decline{};
        } else {
            bool is_null;
            if (v.is_null().get(is_null) || !is_null) throw Decline{};
        }
        while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' || raw.back() == '\r'))
            raw.remove_suffix(1);
    }
    return raw;
}

inline PyObject *str_of(std::string_view s) {
    PyObject *o = PyUnicode_DecodeUTF8(s.data(), (Py_ssize_t)s.size(), "strict");
    if (o == nullptr) throw Decline{};  // cleared by the caller
    return o;
}

bool ascii_contains_ci(std::string_view hay, std::string_view needle) {  // needle lower-case
    if (needle.size() > hay.size()) return false;
    for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
        size_t k = 0;
        while (k < needle.size()) {
            char c = hay[i + k];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != needle[k]) break;
            ++k;
        }
        if (k == needle.size()) return true;
    }
    return false;
}

// -- time: fhir_common.fast_time for the FHIR instant shapes ------------------------------
//
// datetime.fromisoformat(text) then timestamp() * 1000 rounded half away from zero.
// Accepted here: YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM]; anything else declines.

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

inline int digits(std::string_view s, size_t at, size_t n) {
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
        char c = s[i];
        if (c < '0' || c > '9') throw Decline{};
        v = v * 10 + (c - '0');
    }
    return v;
}

int64_t fast_time(std::string_view s) {
    if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') throw Decline{};
    const int year = digits(s, 0, 4), month = digits(s, 5, 2), day = digits(s, 8, 2);
    const int hour = digits(s, 11, 2), minute = digits(s, 14, 2), second = digits(s, 17, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) throw Decline{};
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap ? 1 : 0)) throw Decline{};
    size_t i = 19;
    int64_t micros = 0;
    if (i < s.size() && s[i] == '.') {
        ++i;
        size_t start = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        size_t n = i - start;
        if (n < 1 || n > 6) throw Decline{};
        micros = digits(s, start, n);
        for (size_t k = n; k < 6; ++k) micros *= 10;
    }
    int64_t offset = 0;
    if (i < s.size()) {
        if (s[i] == 'Z' && i + 1 == s.size()) {
            // UTC
        } else if ((s[i] == '+' || s[i] == '-') && i + 6 == s.size() && s[i + 3] == ':') {
            const int oh = digits(s, i + 1, 2), om = digits(s, i + 4, 2);
            if (oh > 23 || om > 59) throw Decline{};
            offset = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        } else {
            throw Decline{};
        }
    }
    const int64_t secs = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600 + minute * 60 +
                         second - offset;
    // timedelta.total_seconds(): microseconds / 10**6, correctly rounded (exact below 2**53).
    const int64_t total_us = secs * 1000000 + micros;
    if (total_us > ((int64_t)1 << 53) || total_us < -((int64_t)1 << 53)) throw Decline{};
    const double ts = (double)total_us / 1e6;
    const double scaled = ts * 1000 + (ts >= 0 ? 0.5 : -0.5);
    return (int64_t)scaled;  // int() truncates toward zero, as in Python
}

// -- base64: fhir_common._decode_query ----------------------------------------------------

inline int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Strict base64 (base64.b64decode(validate=True)); false when the text is not base64.
bool b64_decode(std::string_view in, std::string &out) {
    out.clear();
    if (in.size() % 4 != 0) return false;
    size_t pad = 0;
    if (!in.empty() && in.back() == '=') pad = (in.size() >= 2 && in[in.size() - 2] == '=') ? 2 : 1;
    const size_t body = in.size() - pad;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < body; ++i) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back((char)((acc >> bits) & 0xFF));
        }
    }
    return true;
}

// -- agents: sessions cut out of the memo key ---------------------------------------------
//
// fhir_common._session_of: the first extension of an agent whose url contains "session"
// (case-insensitive) with a value (valueString, valueId, valueCode, valueUri, then
// valueIdentifier.value); fhir_common.combine: the event's session is the first agent's
// that has one. The value is blanked ("") in the key and in the JSON the Python side
// computes the context from; unusual shapes decline.

struct Cut {
    size_t begin, end;  // byte range inside the agent array's raw text, the string's content
};

void agent_sessions(FastObject *self, std::string_view agents, std::vector<Cut> &cuts, std::string_view &session) {
    std::string &buf = *self->agent_buffer;
    buf.assign(agents.data(), agents.size());
    buf.append(SIMDJSON_PADDING, '\0');
    ondemand::document doc;
    if (self->agent_parser->iterate(buf.data(), agents.size(), buf.size()).get(doc)) throw Decline{};
    ondemand::array arr;
    if (doc.get_array().get(arr)) throw Decline{};
    const char *base = buf.data();
    for (auto item : arr) {
        ondemand::object agent;
        if (item.get_object().get(agent)) throw Decline{};
        bool seen_extension = false;
        for (auto field : agent) {
            std::string_view key;
            if (field.unescaped_key().get(key)) throw Decline{};
            if (key != "extension") continue;  // other members are the Python side's business
            if (seen_extension) throw Decline{};
            seen_extension = true;
            ondemand::array exts;
            if (field.value().get_array().get(exts)) throw Decline{};
            bool agent_has_session = false;
            for (auto e : exts) {
                ondemand::object ext;
                if (e.get_object().get(ext)) throw Decline{};
                std::string_view url;
                bool has_url = false;
                // valueString, valueId, valueCode, valueUri: _session_of's order.
                struct Value {
                    bool has = false;
                    std::string_view text, token;
                } values[4];
                bool has_identifier = false;
                for (auto ef : ext) {
                    std::string_view ek;
                    if (ef.unescaped_key().get(ek)) throw Decline{};
                    int kind = ek == "valueString" ? 0 : ek == "valueId" ? 1 : ek == "valueCode" ? 2 : ek == "valueUri" ? 3 : -1;
                    if (ek == "url") {
                        if (has_url) throw Decline{};
                        has_url = true;
                        url = need_string(ef.value());
                    } else if (kind >= 0) {
                        if (values[kind].has) throw Decline{};
                        ondemand::value v = ef.value();
                        values[kind].token = v.raw_json_token();
                        values[kind].text = need_string(v);
                        values[kind].has = true;
                    } else if (ek == "valueIdentifier") {
                        has_identifier = true;
                    }
                }
                if (!has_url) continue;
                bool ascii = true;
                for (char c : url) ascii = ascii && (unsigned char)c < 0x80;
                if (!ascii) throw Decline{};
                if (!ascii_contains_ci(url, "session")) continue;
                // _auth_of reads extensions whose url says auth/amr/assurance/mfa: a session
                // value there would count for the login's assurance too.
                if (ascii_contains_ci(url, "auth") || ascii_contains_ci(url, "amr") ||
                    ascii_contains_ci(url, "assurance") || ascii_contains_ci(url, "mfa"))
                    throw Decline{};
                if (agent_has_session) continue;  // _session_of stops at the agent's first one
                const Value *chosen = nullptr;
                for (const Value &v : values) {
                    if (v.has && !v.text.empty()) {
                        chosen = &v;
                        break;
                    }
                }
                if (chosen == nullptr) {
                    if (has_identifier) throw Decline{};  // valueIdentifier.value: the Python path
                    continue;
                }
                // The value's content in the raw text, after the opening quote and up to the
                // closing one; with escapes the raw text differs from the value: decline.
                const std::string_view token = chosen->token;
                if (token.empty() || token[0] != '"') throw Decline{};
                const char *close = static_cast<const char *>(memchr(token.data() + 1, '"', token.size() - 1));
                if (close == nullptr) throw Decline{};
                const std::string_view content(token.data() + 1, (size_t)(close - token.data() - 1));
                if (content.find('\\') != std::string_view::npos || content != chosen->text) throw Decline{};
                const size_t vbegin = (size_t)(token.data() + 1 - base), vend = (size_t)(close - base);
                agent_has_session = true;
                cuts.push_back(Cut{vbegin, vend});
                if (session.empty()) session = std::string_view(agents.data() + vbegin, vend - vbegin);
            }
        }
    }
    if (!at_end(doc)) throw Decline{};
}

// -- what one line says, before any Python object exists ---------------------------------
//
// Two phases: `extract` parses a line and finds everything it can without Python; `build`
// asks Python for the context (on a memo miss) and the query categories, and creates the
// AccessEvent. Any Decline in either sends the line to the Python path. The views
// `extract` keeps point into the line's buffer, simdjson's string buffer and the agent
// memo: all stay valid until the next line, and `build` runs before it.

struct Extracted {
    std::string_view id, session, blanked, action, desc;
    bool has_action = false, has_desc = false, has_query = false;
    int64_t time = 0;
    long mask = 0;
    long others = 0;  // data entities (not Patient-role ones) seen
    std::vector<std::string_view> patients;
    std::vector<std::string> queries;  // decoded query texts (the first `n_queries`)
    size_t n_queries = 0;
    const Ctx *ctx = nullptr;  // found in the memo; nullptr: `resolve` asks Python
    uint64_t serial = 0;
    std::string_view parts[N_PARTS];  // raw parts, for `resolve`

    void reset() {  // keeps the vectors' capacity from line to line
        id = session = blanked = action = desc = {};
        has_action = has_desc = has_query = false;
        time = mask = others = 0;
        patients.clear();
        n_queries = 0;
        ctx = nullptr;
        serial = 0;
    }
};

// -- entities: fhir_common.touched_fast ---------------------------------------------------

struct CodingView {
    bool present = false;
    bool has_system = false, has_code = false;
    std::string_view system, code;
};

CodingView coding_of(ondemand::value v) {
    CodingView c;
    c.present = true;
    ondemand::object o;
    if (v.get_object().get(o)) throw Decline{};
    unsigned seen = 0;
    for (auto f : o) {
        std::string_view k;
        if (f.unescaped_key().get(k)) throw Decline{};
        unsigned bit;
        if (k == "system") {
            bit = 1;
            c.system = need_string(f.value());
            c.has_system = true;
        } else if (k == "code") {
            bit = 2;
            c.code = need_string(f.value());
            c.has_code = true;
        } else if (k == "display") {
            bit = 4;
            need_string(f.value());
        } else {
            throw Decline{};  // coding, text, extension...: the Python path decides
        }
        if (seen & bit) throw Decline{};
        seen |= bit;
    }
    return c;
}

void touched_of(FastObject *self, ondemand::array entities, Extracted &out) {
    long others = 0;
    for (auto item : entities) {
        ondemand::object e;
        if (item.get_object().get(e)) throw Decline{};
        CodingView role, type;
        bool has_what = false, has_ref = false, has_query = false, has_description = false;
        std::string_view ref, query, description;
        unsigned seen = 0;
        for (auto f : e) {
            std::string_view k;
            if (f.unescaped_key().get(k)) throw Decline{};
            unsigned bit;
            if (k == "what") {
                bit = 1;
                has_what = true;
                ondemand::object w;
                if (f.value().get_object().get(w)) throw Decline{};
                bool seen_ref = false;
                for (auto wf : w) {
                    std::string_view wk;
                    if (wf.unescaped_key().get(wk)) throw Decline{};
                    if (wk != "reference" || seen_ref) throw Decline{};
                    seen_ref = true;
                    ref = need_string(wf.value());
                    has_ref = true;
                }
            } else if (k == "role") {
                bit = 2;
                role = coding_of(f.value());
            } else if (k == "type") {
                bit = 4;
                type = coding_of(f.value());
            } else if (k == "query") {
                bit = 8;
                query = need_string(f.value());
                has_query = true;
            } else if (k == "description") {
                bit = 16;
                description = need_string(f.value());
                has_description = true;
            } else if (k == "name") {
                bit = 32;
                need_string(f.value());
            } else {
                throw Decline{};
            }
            if (seen & bit) throw Decline{};
            seen |= bit;
        }
        if (!role.present || !role.has_system || role.system != OBJECT_ROLE || !role.has_code) throw Decline{};
        const std::string_view code = role.code;
        if (type.present && (!type.has_system || type.system != AUDIT_ENTITY_TYPE)) throw Decline{};
        if (code == "24") {
            out.has_query = true;
            if (has_query && !query.empty()) {
                if (out.n_queries == out.queries.size()) out.queries.emplace_back();
                if (!b64_decode(query, out.queries[out.n_queries])) throw Decline{};  // not base64: rare, Python
                ++out.n_queries;
            } else if (has_description && !description.empty()) {
                throw Decline{};
            }
            continue;
        }
        if (!has_what || !has_ref || ref.empty()) throw Decline{};
        const size_t slash = ref.find('/');
        if (slash == std::string_view::npos || slash == 0 || slash + 1 == ref.size()) throw Decline{};
        const std::string_view rtype = ref.substr(0, slash);
        if (ref.find('/', slash + 1) != std::string_view::npos || ref.find(':') != std::string_view::npos)
            throw Decline{};
        auto add_patient = [&out](std::string_view r) {
            for (std::string_view p : out.patients)
                if (p == r) return;
            out.patients.push_back(r);
        };
        if (code == "1") {
            if (rtype != "Patient") throw Decline{};
            add_patient(ref);
            continue;
        }
        if (self->data_roles->find(std::string(code)) == self->data_roles->end()) throw Decline{};
        ++others;
        if (rtype == "Patient") {
            add_patient(ref);
            out.mask |= self->mask_identity | self->mask_contact;
            continue;
        }
        auto found = self->categories->find(std::string(rtype));
        if (found != self->categories->end()) out.mask |= found->second;
    }
    out.others = others;  // the identity rule needs the query categories: `build` applies it
}

// -- the memo -----------------------------------------------------------------------------

void Fast_clear_memo(FastObject *self);

PyObject *attr(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == nullptr) throw Decline{};
    return v;
}

// Ctx of a Python _Context; false (and nothing held) when the context is an error.
bool ctx_from(PyObject *c, Ctx &out) {
    PyObject *error = attr(c, "error");
    const int bad = PyObject_IsTrue(error);
    Py_DECREF(error);
    if (bad != 0) return false;
    out = Ctx{};
    out.account = attr(c, "account");
    out.actor_kind = attr(c, "actor_kind");
    out.client = attr(c, "client");
    out.source = attr(c, "source");
    out.auth = attr(c, "auth");
    out.session = attr(c, "session");
    out.purpose = attr(c, "purpose");
    out.outcome = attr(c, "outcome");
    PyObject *action = attr(c, "action");
    if (action == Py_None) {
        Py_DECREF(action);
        out.action = nullptr;
    } else {
        out.action = action;
    }
    out.address = attr(c, "address");
    out.addr_search = attr(c, "addr_search");
    out.addr_other = attr(c, "addr_other");
    out.error = false;
    return true;
}

// The memo key of a line's repeated parts: the agents' serial, then the other raw parts
// and the action and outcome texts, each with its length in front (separators could be
// forged by a part that holds one; lengths cannot).
inline void put(std::string &key, bool present, std::string_view text) {
    const uint32_t n = present ? (uint32_t)text.size() : UINT32_MAX;
    key.append(reinterpret_cast<const char *>(&n), sizeof n);
    key.append(text);
}

void key_of(std::string &key, uint64_t serial, const std::string_view parts[N_PARTS], bool has_action,
            std::string_view action, bool has_desc, std::string_view desc) {
    key.clear();
    key.append(reinterpret_cast<const char *>(&serial), sizeof serial);
    for (int p = SOURCE; p < N_PARTS; ++p) put(key, true, parts[p]);
    put(key, has_action, action);
    put(key, has_desc, desc);
}

// On a memo miss: the context from Python, memoised under the key `extract` left in
// `self->key`. nullptr: the parts make no usable context (the Python path says why).
const Ctx *resolve(FastObject *self, const Extracted &e) {
    const std::string &key = *self->key;
    ++self->misses;
    PyObject *args[12];
    int n = 0;
    args[n++] = PyLong_FromUnsignedLongLong(e.serial);
    args[n++] = PyBytes_FromStringAndSize(e.blanked.data(), (Py_ssize_t)e.blanked.size());
    for (int p = SOURCE; p < N_PARTS; ++p) args[n++] = PyBytes_FromStringAndSize(e.parts[p].data(), (Py_ssize_t)e.parts[p].size());
    args[n++] = e.has_action ? PyUnicode_DecodeUTF8(e.action.data(), (Py_ssize_t)e.action.size(), "strict")
                             : Py_NewRef(Py_None);
    args[n++] = e.has_desc ? PyUnicode_DecodeUTF8(e.desc.data(), (Py_ssize_t)e.desc.size(), "strict")
                           : Py_NewRef(Py_None);
    bool ok = true;
    for (int i = 0; i < n; ++i) ok = ok && args[i] != nullptr;
    PyObject *c = ok ? PyObject_Vectorcall(self->context_of, args, (size_t)n, nullptr) : nullptr;
    for (int i = 0; i < n; ++i) Py_XDECREF(args[i]);
    if (c == nullptr) throw Decline{};
    Ctx ctx;
    bool usable;
    try {
        usable = ctx_from(c, ctx);
    } catch (Decline &) {
        Py_DECREF(c);
        throw;
    }
    Py_DECREF(c);
    if (!usable) return nullptr;
    // Never cleared here (the current line may hold a context of the memo): `begin` clears.
    return &self->memo->emplace(key, ctx).first->second;
}

// -- phase 1: one line, no Python ---------------------------------------------------------

// `line` must be followed by SIMDJSON_PADDING readable bytes (Fast_line's buffer is).
void extract(FastObject *self, std::string_view line, Extracted &out) {
    out.reset();
    ondemand::document doc;
    if (self->parser->iterate(line.data(), line.size(), line.size() + SIMDJSON_PADDING).get(doc)) throw Decline{};
    ondemand::object top;
    if (doc.get_object().get(top)) throw Decline{};

    std::string_view parts[N_PARTS];
    std::string_view id, recorded, action, desc;
    bool has_id = false, has_recorded = false, is_audit_event = false;
    unsigned seen = 0;
    for (auto field : top) {
        std::string_view k;
        if (field.unescaped_key().get(k)) throw Decline{};
        ondemand::value v;
        if (field.value().get(v)) throw Decline{};
        unsigned bit;
        int part = -1;
        if (k == "resourceType") {
            bit = 1u << 0;
            is_audit_event = need_string(v) == "AuditEvent";
            if (!is_audit_event) throw Decline{};
        } else if (k == "id") {
            bit = 1u << 1;
            id = need_string(v);
            has_id = true;
        } else if (k == "recorded") {
            bit = 1u << 2;
            recorded = need_string(v);
            has_recorded = true;
        } else if (k == "action") {
            bit = 1u << 3;
            action = need_string(v);
            out.has_action = true;
        } else if (k == "outcomeDesc") {
            bit = 1u << 4;
            desc = need_string(v);
            out.has_desc = true;
        } else if (k == "entity") {
            // No entity at all (a login, a logout): no patient, no category, as
            // `touched_of(None, None)`; an empty list reads the same.
            bit = 1u << 5;
            ondemand::array arr;
            if (v.get_array().get(arr)) throw Decline{};
            touched_of(self, arr, out);
        } else if (k == "agent") {
            bit = 1u << 6, part = AGENT;
        } else if (k == "source") {
            bit = 1u << 7, part = SOURCE;
        } else if (k == "type") {
            bit = 1u << 8, part = TYPE;
        } else if (k == "subtype") {
            bit = 1u << 9, part = SUBTYPE;
        } else if (k == "category") {
            bit = 1u << 10, part = CATEGORY;
        } else if (k == "code") {
            bit = 1u << 11, part = CODE;
        } else if (k == "outcome") {
            bit = 1u << 12, part = OUTCOME;
        } else if (k == "purposeOfEvent") {
            bit = 1u << 13, part = PURPOSE;
        } else if (k == "authorization") {
            bit = 1u << 14, part = AUTHORIZATION;
        } else {
            throw Decline{};  // period, occurred[x], patient, meta, text...: the Python path
        }
        if (seen & bit) throw Decline{};
        seen |= bit;
        if (part >= 0) parts[part] = raw_of(v);
    }
    if (!at_end(doc)) throw Decline{};
    if (!is_audit_event || !has_id || id.empty() || !has_recorded) throw Decline{};
    out.time = fast_time(recorded);

    // Sessions out of the agents. Looking for "session" with memmem may miss a url that
    // spells it otherwise ("Session", \u escapes): the agents then stay whole in the key,
    // which is only a less effective memo, never a wrong one.
    const std::string_view agents = parts[AGENT];
    auto known = self->cuts->find(agents);
    if (known == self->cuts->end()) {
        AgentCut entry{0, false, std::string(), std::string()};
        if (!agents.empty() && memmem(agents.data(), agents.size(), "session", 7) != nullptr) {
            std::vector<Cut> cuts;
            std::string_view found_session;
            agent_sessions(self, agents, cuts, found_session);
            entry.session.assign(found_session);
            if (!cuts.empty()) {
                size_t at = 0;
                for (const Cut &c : cuts) {
                    entry.blanked.append(agents.substr(at, c.begin - at));
                    at = c.end;
                }
                entry.blanked.append(agents.substr(at));
                entry.cut = true;
            }
        }
        const std::string_view blanked = entry.cut ? std::string_view(entry.blanked) : agents;
        auto serial = self->serials->find(blanked);
        if (serial == self->serials->end()) {
            // Serials are never reused: when this table is cleared, contexts keyed by old
            // serials only become unreachable (and go at the next `begin`).
            if (self->serials->size() >= SERIAL_LIMIT) self->serials->clear();
            serial = self->serials->emplace(std::string(blanked), ++self->next_serial).first;
        }
        entry.serial = serial->second;
        if (self->cuts->size() >= CUT_LIMIT) self->cuts->clear();
        known = self->cuts->emplace(std::string(agents), std::move(entry)).first;
    }
    const AgentCut &agent = known->second;
    out.serial = agent.serial;
    out.session = agent.session;
    out.id = id;

    std::string &key = *self->key;
    key_of(key, agent.serial, parts, out.has_action, action, out.has_desc, desc);
    if (self->last_ctx != nullptr && key == *self->last_key) {
        out.ctx = self->last_ctx;
        ++self->hits;
    } else {
        auto found = self->memo->find(key);
        if (found != self->memo->end()) {
            out.ctx = &found->second;
            self->last_key->assign(key);
            self->last_ctx = out.ctx;
            ++self->hits;
        } else {
            // A miss: keep what `resolve` needs to ask Python (the key stays in self->key).
            out.blanked = agent.cut ? std::string_view(agent.blanked) : agents;
            out.action = action;
            out.desc = desc;
            for (int p = 0; p < N_PARTS; ++p) out.parts[p] = parts[p];
        }
    }
}

// -- phase 2: the Python objects ----------------------------------------------------------

inline PyObject *utf8(std::string_view s) {
    return PyUnicode_DecodeUTF8(s.data(), (Py_ssize_t)s.size(), "strict");
}

// The AccessEvent of an extracted line; Decline (with or without a Python error) when the
// Python path must read it.
PyObject *build(FastObject *self, const Extracted &e) {
    const Ctx *ctx = e.ctx;
    if (ctx == nullptr) {
        ctx = resolve(self, e);
        if (ctx == nullptr) throw Decline{};
    }
    long mask = e.mask;
    const long others = e.others;
    PyObject *query = nullptr;
    for (size_t i = 0; i < e.n_queries; ++i) {
        PyObject *text = utf8(e.queries[i]);
        if (text == nullptr) {
            Py_XDECREF(query);
            throw Decline{};  // not UTF-8: "replace" decoding is the Python path's
        }
        PyObject *m = PyObject_CallOneArg(self->query_categories, text);
        const long bits = m != nullptr ? PyLong_AsLong(m) : -1;
        Py_XDECREF(m);
        if (bits == -1 && PyErr_Occurred()) {
            Py_DECREF(text);
            Py_XDECREF(query);
            throw Decline{};
        }
        mask |= bits;
        if (query == nullptr) {
            query = text;
        } else {
            Py_DECREF(text);
        }
    }
    if (!e.patients.empty() && others == 0 && !(mask & ~self->mask_national)) mask |= self->mask_identity;
    if (query == nullptr) query = PyUnicode_FromStringAndSize("", 0);

    PyObject *act = ctx->action, *address = ctx->address;
    if (act == nullptr) {
        if (e.has_query) {
            act = self->search, address = ctx->addr_search;
        } else {
            act = self->other, address = ctx->addr_other;
        }
    }
    PyObject *patients = PyTuple_New((Py_ssize_t)e.patients.size());
    bool ok = patients != nullptr && query != nullptr;
    for (size_t i = 0; ok && i < e.patients.size(); ++i) {
        PyObject *s = utf8(e.patients[i]);
        if (s == nullptr) {
            ok = false;
            break;
        }
        PyTuple_SET_ITEM(patients, (Py_ssize_t)i, s);
    }
    PyObject *id_obj = ok ? utf8(e.id) : nullptr;
    PyObject *time_obj = ok ? PyLong_FromLongLong(e.time) : nullptr;
    PyObject *mask_obj = ok ? PyLong_FromLong(mask) : nullptr;
    PyObject *session_obj = nullptr;
    if (ok) session_obj = e.session.empty() ? Py_NewRef(ctx->session) : utf8(e.session);
    PyObject *event = nullptr;
    if (ok && id_obj && time_obj && mask_obj && session_obj) {
        PyObject *args[15] = {id_obj,       time_obj,    ctx->account, act,         ctx->actor_kind,
                              ctx->outcome, patients,    mask_obj,     ctx->client, address,
                              session_obj,  ctx->source, query,        ctx->auth,   ctx->purpose};
        event = PyObject_Vectorcall(self->event_type, args, 15, nullptr);
    }
    Py_XDECREF(id_obj);
    Py_XDECREF(time_obj);
    Py_XDECREF(mask_obj);
    Py_XDECREF(session_obj);
    Py_XDECREF(query);
    Py_XDECREF(patients);
    if (event == nullptr) throw Decline{};
    return event;
}

// Before a line: drop the memo when it is full. Only here, so that a context `extract`
// found stays alive until `build` has used it.
void begin(FastObject *self) {
    if (self->memo->size() >= MEMO_LIMIT) Fast_clear_memo(self);
}

// A declined line: None, or the error when it is not one that means "unusual line".
bool declined(FastObject *self) {
    ++self->declined;
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(self->declines)) return false;
        PyErr_Clear();
    }
    return true;
}

// -- the Python type ----------------------------------------------------------------------

struct Busy {
    FastObject *self;
    explicit Busy(FastObject *s) : self(s) { self->busy = true; }
    ~Busy() { self->busy = false; }
};

PyObject *Fast_line(FastObject *self, PyObject *arg) {
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(arg, &data, &size) < 0) return nullptr;
    if (self->busy || (size_t)size > LINE_LIMIT) {
        ++self->declined;
        Py_RETURN_NONE;
    }
    Busy busy(self);
    try {
        begin(self);
        std::string &buf = *self->buffer;
        buf.assign(data, (size_t)size);
        buf.append(SIMDJSON_PADDING, '\0');
        Extracted &e = *self->extracted;
        extract(self, std::string_view(buf.data(), (size_t)size), e);
        return build(self, e);
    } catch (Decline &) {
        if (!declined(self)) return nullptr;
        Py_RETURN_NONE;
    } catch (std::bad_alloc &) {  // no C++ exception may cross into Python
        return PyErr_NoMemory();
    } catch (std::exception &exc) {
        PyErr_SetString(PyExc_RuntimeError, exc.what());
        return nullptr;
    }
}

PyObject *Fast_stats(FastObject *self, PyObject *) {
    return Py_BuildValue("{s:n,s:n,s:n,s:n}", "hits", self->hits, "misses", self->misses, "declined",
                         self->declined, "memo", (Py_ssize_t)self->memo->size());
}

void Fast_clear_memo(FastObject *self) {
    self->last_ctx = nullptr;
    if (self->memo != nullptr) {
        for (auto &kv : *self->memo) ctx_release(kv.second);
        self->memo->clear();
    }
}

int Fast_traverse(FastObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->context_of);
    Py_VISIT(self->query_categories);
    Py_VISIT(self->event_type);
    Py_VISIT(self->declines);
    return 0;
}

int Fast_clear(FastObject *self) {
    Py_CLEAR(self->context_of);
    Py_CLEAR(self->query_categories);
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->declines);
    Py_CLEAR(self->search);
    Py_CLEAR(self->other);
    Fast_clear_memo(self);
    return 0;
}

void Fast_dealloc(FastObject *self) {
    PyObject_GC_UnTrack(self);
    Fast_clear(self);
    delete self->memo;
    delete self->categories;
    delete self->data_roles;
    delete self->parser;
    delete self->agent_parser;
    delete self->buffer;
    delete self->extracted;
    delete self->agent_buffer;
    delete self->key;
    delete self->cuts;
    delete self->serials;
    delete self->last_key;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *Fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static const char *names[] = {"context_of", "query_categories", "event_type", "categories", "data_roles",
                                  "masks",      "actions",          "declines",   nullptr};
    PyObject *context_of, *query_categories, *event_type, *categories, *data_roles, *declines;
    long identity, contact, national;
    PyObject *search, *other;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!O(lll)(UU)O", const_cast<char **>(names), &context_of,
                                     &query_categories, &event_type, &PyDict_Type, &categories, &data_roles,
                                     &identity, &contact, &national, &search, &other, &declines))
        return nullptr;
    FastObject *self = (FastObject *)type->tp_alloc(type, 0);
    if (self == nullptr) return nullptr;
    try {
        self->categories = new std::unordered_map<std::string, int>();
        self->data_roles = new std::unordered_set<std::string>();
        self->memo = new std::unordered_map<std::string, Ctx, TextHash, std::equal_to<>>();
        self->parser = new ondemand::parser();
        self->agent_parser = new ondemand::parser();
        self->buffer = new std::string();
        self->extracted = new Extracted();
        self->agent_buffer = new std::string();
        self->key = new std::string();
        self->cuts = new std::unordered_map<std::string, AgentCut, TextHash, std::equal_to<>>();
        self->serials = new std::unordered_map<std::string, uint64_t, TextHash, std::equal_to<>>();
        self->next_serial = 0;
        self->last_key = new std::string();
        self->last_ctx = nullptr;
    } catch (std::bad_alloc &) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(categories, &pos, &k, &v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(k, &n);
        long m = PyLong_AsLong(v);
        if (s == nullptr || (m == -1 && PyErr_Occurred())) {
            Py_DECREF(self);
            return nullptr;
        }
        (*self->categories)[std::string(s, (size_t)n)] = (int)m;
    }
    PyObject *it = PyObject_GetIter(data_roles);
    if (it == nullptr) {
        Py_DECREF(self);
        return nullptr;
    }
    while (PyObject *item = PyIter_Next(it)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(item, &n);
        if (s != nullptr) self->data_roles->insert(std::string(s, (size_t)n));
        Py_DECREF(item);
        if (s == nullptr) break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(self);
        return nullptr;
    }
    self->context_of = Py_NewRef(context_of);
    self->query_categories = Py_NewRef(query_categories);
    self->event_type = Py_NewRef(event_type);
    self->declines = Py_NewRef(declines);
    self->search = Py_NewRef(search);
    self->other = Py_NewRef(other);
    self->mask_identity = identity;
    self->mask_contact = contact;
    self->mask_national = national;
    return (PyObject *)self;
}

PyMethodDef Fast_methods[] = {
    {"line", (PyCFunction)Fast_line, METH_O,
     "AccessEvent of one NDJSON line, or None when the Python path must read it."},
    {"stats", (PyCFunction)Fast_stats, METH_NOARGS, "Memo hits, misses, declined lines, memo size."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(nullptr, 0)
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sentinelle.sources._balp",
    "Compiled fast path of the FHIR AuditEvent NDJSON reader (simdjson).", -1, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__balp(void) {
    FastType.tp_name = "sentinelle.sources._balp.Fast";
    FastType.tp_basicsize = sizeof(FastObject);
    FastType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
    FastType.tp_doc = "Reads BALP AuditEvent lines into AccessEvents, declining unusual ones.";
    FastType.tp_new = Fast_new;
    FastType.tp_dealloc = (destructor)Fast_dealloc;
    FastType.tp_traverse = (traverseproc)Fast_traverse;
    FastType.tp_clear = (inquiry)Fast_clear;
    FastType.tp_methods = Fast_methods;
    if (PyType_Ready(&FastType) < 0) return nullptr;
    PyObject *m = PyModule_Create(&module);
    if (m == nullptr) return nullptr;
    if (PyModule_AddObjectRef(m, "Fast", (PyObject *)&FastType) < 0) {
        Py_DECREF(m);
        return nullptr;
    }
    if (PyModule_AddStringConstant(m, "SIMDJSON_VERSION", BALP_STR(SIMDJSON_VERSION)) < 0) {
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
