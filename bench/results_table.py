"""Markdown tables of Sentinelle against the naive baseline, from `sentinelle evaluate --json` files.

    python bench/results_table.py NAME=DIR ...   (each DIR holds eval.json and eval-baseline.json)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _summary(report: dict[str, Any]) -> list[str]:
    attacks = report["attacks"]
    detected = [a for a in attacks if a["detected"]]
    exposed = sum(a["patients_exposed"] for a in attacks)
    bulk = [a["patients_exposed"] for a in attacks if a["detected"] and a["n_patients"] >= 100]
    delays = [a["delay_s"] for a in detected if a["delay_s"] is not None]
    return [
        f"{len(detected)}/{len(attacks)}",
        f"{max(bulk) if bulk else '-'}",
        f"{exposed:,}",
        f"{statistics.median(delays):,.0f} s" if delays else "-",
        f"{report['false_alerts_per_1000_account_days']:.3f}",
        f"{report['traps_hit']}/{len(report['traps'])}",
    ]


def main() -> None:
    print("| hospital | detector | attacks detected | worst bulk exposure (patients before first alert) "
          "| patients exposed, all attacks | median delay | false alerts / 1,000 account-days | traps alerted |")
    print("|---|---|---|---|---|---|---|---|")
    per_attack: list[str] = []
    for arg in sys.argv[1:]:
        name, _, folder = arg.partition("=")
        d = Path(folder)
        ours = json.loads((d / "eval.json").read_text())
        base = json.loads((d / "eval-baseline.json").read_text())
        print(f"| {name} | Sentinelle | " + " | ".join(_summary(ours)) + " |")
        print(f"| {name} | naive baseline | " + " | ".join(_summary(base)) + " |")
        for a, b in zip(ours["attacks"], base["attacks"], strict=True):
            def cell(x: dict[str, Any]) -> str:
                if not x["detected"]:
                    return f"missed ({x['n_patients']:,} exposed)"
                return f"{x['patients_exposed']:,} / {x['n_patients']:,} in {x['delay_s']:,.0f} s"
            per_attack.append(f"| {name} | {a['kind']} | {cell(a)} | {cell(b)} |")
    print()
    print("| hospital | attack | Sentinelle: patients before first alert, delay | baseline |")
    print("|---|---|---|---|")
    print("\n".join(per_attack))


if __name__ == "__main__":
    main()
