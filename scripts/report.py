"""One report across runs: results/report.md (every evaluation, one table per task) and results/report.png
(tuned prompts against baselines per task, and the runs' loss curves overlaid).

    python scripts/report.py                        # every run under results/ and checkpoints/
    python scripts/report.py smoke-qna smoke-sum    # only these runs (names, or their folders)
    python scripts/report.py --checkpoints-dir /data/ckpt --out /tmp/report

Reads only results/<run>/<split>[-<variant>]/metrics.json and checkpoints/<run>/log.jsonl; runs with
missing or unreadable results are noted in the report and on stderr.
"""

import argparse
import shlex
import sys

from softprompt.cli import run_cli
from softprompt.report import REPORT_MD, REPORT_PNG, write_report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run names or folders (default: every run)")
    parser.add_argument("--results-dir", default="results", help="where evaluation wrote results (default: results)")
    parser.add_argument(
        "--checkpoints-dir",
        default="checkpoints",
        help="where training wrote run folders with log.jsonl (default: checkpoints)",
    )
    parser.add_argument("--out", help="folder for report.md and report.png (default: the results dir)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "scripts/report.py", *(sys.argv[1:] if argv is None else argv)])
    report = write_report(args.runs, args.results_dir, args.checkpoints_dir, args.out, command=command)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    out = args.out or args.results_dir
    print(f"{len(report.rows)} evaluation(s), {len(report.curves)} loss curve(s): {out}/{REPORT_MD} {out}/{REPORT_PNG}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
