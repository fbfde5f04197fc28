"""`make bench`: run every benchmark script in turn; each prints one JSON line."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_trainer.py",
    "bench_prepare.py",
    "bench_predict.py",
    "bench_memory.py",
    "bench_speed.py",
    "bench_tiling.py",
    "bench_annotations.py",
    "bench_runtimes.py",
    "bench_peers.py",
]

if __name__ == "__main__":
    failed = 0
    for script in SCRIPTS:
        print(f"# {script}", file=sys.stderr, flush=True)
        failed += subprocess.call([sys.executable, str(HERE / script), *sys.argv[1:]]) != 0
    sys.exit(1 if failed else 0)
