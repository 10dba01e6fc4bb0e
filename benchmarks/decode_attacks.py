"""Peak memory and CPU of decoding each amplification file, one fresh process per file.

    .venv/bin/python -m benchmarks.decode_attacks [--only NAME ...] [--json out.json]

For every file in harness.decode_attacks.ATTACKS a new interpreter imports the decoder,
notes its peak RSS (idle), then calls `open_checked(data, min_side=448)` (resnet18 at
224 px) and prints the peak RSS above idle, the CPU seconds of the call and the answer.
The files are built once in this process and handed over in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from harness import ROOT
from harness.decode_attacks import ATTACKS
from harness.machine import load_average, machine_line

ONE_FILE = textwrap.dedent("""
    import json, sys, time
    from classifier.images import ImageError, open_checked

    def high_water_kb():  # VmHWM: this process's own peak (ru_maxrss survives exec)
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

    data = open(sys.argv[1], "rb").read()
    idle = high_water_kb()
    start, wall = time.process_time(), time.monotonic()
    try:
        im = open_checked(data, min_side=448)
        answer = f"decoded {im.size[0]}x{im.size[1]}"
    except ImageError as exc:
        answer = f"{exc.code}: {str(exc)[:90]}"
    cpu, wall = time.process_time() - start, time.monotonic() - wall
    peak = high_water_kb()
    print(json.dumps({"idle_mb": idle / 1024, "peak_above_idle_mb": (peak - idle) / 1024,
                      "cpu_s": cpu, "wall_s": wall, "answer": answer}))
""")


def measure(path: Path, timeout: float = 300) -> dict:
    try:
        result = subprocess.run([sys.executable, "-c", ONE_FILE, str(path)], cwd=ROOT,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"answer": f"still running after {timeout:.0f} s"}
    if result.returncode != 0:
        return {"answer": f"exit {result.returncode}: {result.stderr.strip()[-200:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names from harness.decode_attacks.ATTACKS")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    names = args.only or list(ATTACKS)
    print(f"before: {machine_line()}")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            path = Path(folder) / name
            path.write_bytes(ATTACKS[name]())
            row = {"file_mb": path.stat().st_size / 2**20, **measure(path)}
            rows[name] = row
            print(f"{name:24} {row['file_mb']:8.2f} MB file  "
                  f"peak +{row.get('peak_above_idle_mb', float('nan')):7.0f} MB  "
                  f"cpu {row.get('cpu_s', float('nan')):6.2f} s  {row['answer']}", flush=True)
    print(f"after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_after": load_average(), "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
