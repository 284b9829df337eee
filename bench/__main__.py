"""`python -m bench`: benchmark mailmib against Net-SNMP's snmpd (native table and
pass_persist) on loopback, then the write side; write bench/results/latest.md (and a
timestamped copy) and print it.

    python -m bench                      # 10, 100, 1,000 and 10,000 channels (~10 min)
    BENCH_SIZES=10,100 python -m bench   # a subset
    python -m bench --quick              # a smoke run: tiny sizes, 1 round, short durations
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench import harness, report
from bench.servers import ServerError

RESULTS = Path(__file__).resolve().parent / "results"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of channel counts: {text!r}") from None
    if not sizes or any(n < 10 for n in sizes):
        raise argparse.ArgumentTypeError("sizes are channel counts of at least 10")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="channel counts, e.g. 10,100,1000 (default: $BENCH_SIZES or "
                             "10,100,1000,10000; with --quick 10,100)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, short durations, few CLI runs")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per size")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"where the report goes (default {RESULTS})")
    parser.add_argument("--json", action="store_true", help="also write the raw numbers")
    args = parser.parse_args(argv)

    sizes = args.sizes
    if sizes is None and os.environ.get("BENCH_SIZES"):
        try:
            sizes = _sizes(os.environ["BENCH_SIZES"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"BENCH_SIZES: {exc}")
    config = harness.Config.quick_config(sizes) if args.quick else harness.Config()
    if sizes and not args.quick:
        config.sizes = sizes
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        config.rounds = config.rounds_large = args.rounds

    try:
        results = harness.run(config)
    except ServerError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every server was stopped", file=sys.stderr)
        return 130

    text = report.render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    latest = args.out / "latest.md"
    tmp = args.out / "latest.md.tmp"
    tmp.write_text(text)
    tmp.replace(latest)
    shutil.copyfile(latest, args.out / f"{stamp}.md")
    if args.json:
        (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    print(text)
    print(f"bench: wrote {latest} and {args.out / (stamp + '.md')}"
          f" ({results['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
