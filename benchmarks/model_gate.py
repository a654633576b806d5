"""Should a candidate checkpoint become the default? Compares ``ttsr_core.training.evaluate`` JSON reports.

The rule (issue 20): a new default ships only if, on the different-photograph yardstick, its gain over
bicubic with the right reference beats both the current default's and the round-1 model's, for clean
and for JPEG-q75 LR, and it does not lose on the near-view pairs (validation + validation-extra) against
the current default. Prints the model card's table for every report given and the verdict; exit 0
when the candidate passes, 1 when it does not.

    .venv/bin/python benchmarks/model_gate.py --candidate eval-new.json --default eval-r2.json \\
        --round1 eval-r1.json [--also NAME=eval-other.json ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

YARDSTICK = "different-pairs"
NEAR_VIEW = ("validation", "validation-extra")
DEGRADATIONS = ("bicubic", "jpeg75")
RIGHT, WRONG, SELF = "model + reference", "model + wrong reference", "model + LR↑ as reference"


def _rows(report: dict, sets: tuple[str, ...], degradation: str) -> list[dict]:
    return [row for name in sets for row in report.get(name, {}).get(degradation, {}).get("pairs", [])]


def figures(report: dict, sets: tuple[str, ...], degradation: str) -> dict[str, float]:
    """Mean Y-PSNR differences (dB) over every pair of ``sets``, and per-pair counts."""
    rows = _rows(report, sets, degradation)
    if not rows:
        raise ValueError(f"report {report.get('model')} has no {'/'.join(sets)} pairs for {degradation}")

    def mean(a: str, b: str) -> float:
        return sum(r[a]["psnr"] - r[b]["psnr"] for r in rows) / len(rows)

    return {
        "pairs": len(rows),
        "gain": mean(RIGHT, "bicubic"),
        "right_minus_wrong": mean(RIGHT, WRONG),
        "right_minus_self": mean(RIGHT, SELF),
        "self_minus_wrong": mean(SELF, WRONG),
        "right_wins": sum(r[RIGHT]["psnr"] > r[WRONG]["psnr"] for r in rows),
        "fidelity_ok": sum(r[RIGHT]["lr_psnr"] >= r["bicubic"]["lr_psnr"] for r in rows) if "lr_psnr" in rows[0][RIGHT] else -1,
    }


def table(reports: dict[str, dict]) -> str:
    lines = ["| model | set | LR | pairs | gain over bicubic | right − wrong | right − LR↑-self | LR↑-self − wrong "
             "| right wins | LR fidelity ≥ bicubic |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, report in reports.items():
        for label, sets in (("different photo", (YARDSTICK,)), ("near view", NEAR_VIEW)):
            for deg in DEGRADATIONS:
                f = figures(report, sets, deg)
                fid = "n/a" if f["fidelity_ok"] < 0 else f"{f['fidelity_ok']}/{f['pairs']}"
                lines.append(f"| {name} | {label} | {deg} | {f['pairs']} | {f['gain']:+.2f} | {f['right_minus_wrong']:+.2f} "
                             f"| {f['right_minus_self']:+.2f} | {f['self_minus_wrong']:+.2f} | {f['right_wins']}/{f['pairs']} | {fid} |")
    return "\n".join(lines)


def verdict(candidate: dict, default: dict, round1: dict) -> list[str]:
    """The rules the candidate fails (empty: it may ship)."""
    failed = []
    for deg in DEGRADATIONS:
        new = figures(candidate, (YARDSTICK,), deg)["gain"]
        for name, other in (("the current default", default), ("round 1", round1)):
            old = figures(other, (YARDSTICK,), deg)["gain"]
            if not new > old:
                failed.append(f"different-photo {deg}: gain {new:+.2f} dB does not beat {name}'s {old:+.2f}")
        near_new, near_old = (figures(r, NEAR_VIEW, deg)["gain"] for r in (candidate, default))
        if near_new < near_old:
            failed.append(f"near-view {deg}: gain {near_new:+.2f} dB is below the current default's {near_old:+.2f}")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", type=Path, required=True)
    p.add_argument("--default", type=Path, required=True, help="the current default model's report")
    p.add_argument("--round1", type=Path, required=True, help="the round-1 model's report")
    p.add_argument("--also", nargs="*", default=[], help="NAME=REPORT rows to show beside them")
    args = p.parse_args(argv)
    reports = {name: json.loads(path.read_text()) for name, path in
               (("candidate", args.candidate), ("current default", args.default), ("round 1", args.round1))}
    for item in args.also:
        name, _, path = item.partition("=")
        reports[name] = json.loads(Path(path).read_text())
    print(table(reports))
    failed = verdict(reports["candidate"], reports["current default"], reports["round 1"])
    print("\nverdict:", "ships (beats both on the different-photo yardstick, no loss on near views)" if not failed
          else "does not ship:\n- " + "\n- ".join(failed))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
