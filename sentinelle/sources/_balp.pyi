"""Types of the compiled reader fast path (`_balp.cpp`)."""

from collections.abc import Callable, Iterable

from sentinelle.events import AccessEvent

SIMDJSON_VERSION: str

class Fast:
    def __init__(
        self,
        context_of: Callable[..., object],
        query_categories: Callable[[str], int],
        event_type: type[AccessEvent],
        categories: dict[str, int],
        data_roles: Iterable[str],
        masks: tuple[int, int, int],
        actions: tuple[str, str],
        declines: tuple[type[BaseException], ...],
    ) -> None: ...
    def line(self, raw: bytes, /) -> AccessEvent | None: ...
    def stats(self) -> dict[str, int]: ...
