"""Re-execute notebooks in place, top to bottom, to refresh their stored outputs.

    python tools/execute_notebooks.py notebooks/0*.ipynb

Each notebook runs in a fresh ``python3`` kernel with its own folder as working directory, in
the order given (notebook 4 trains the toy run that later notebooks reuse). The notebook is
written right after its last cell, without saved widget state (readers' JupyterLab rebuilds
the widgets when they run it); ``tests/test_notebooks.py`` checks that. An attempt in which
neither the client nor the kernel makes progress for ``--stall`` seconds is restarted (Linux:
CPU times from /proc). Every number a stored
output shows must come from such a run: never edit outputs by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int) -> float:
    """Run ``path`` and save it; returns the seconds it took. Exits the process on success (see below)."""
    nb = nbformat.read(path, as_version=4)
    last = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    start = time.time()

    def saved_after_last_cell(cell, cell_index, execute_reply, **_):
        if cell_index != last:
            return
        nb.metadata.pop("widgets", None)  # no saved widget state
        nbformat.write(nb, path)
        print(f"{path}: {time.time() - start:.0f} s", flush=True)
        # Done: stop the kernel now. nbclient can wait forever on the shutdown of a kernel that
        # has open Output widgets; the notebook is already written.
        os.kill(client.km.provisioner.pid, signal.SIGKILL)
        os._exit(0)

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_executed=saved_after_last_cell,
    )
    client.execute()
    return time.time() - start


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and all its descendants (the kernel, and processes the kernel starts, such as
    the toy runs trained side by side), from /proc (Linux); finished children count through cutime/cstime."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))  # parent, u+s+cu+cs time
    tree, grew = {pid}, True
    while grew:
        grew = False
        for p, (parent, _) in stats.items():
            if parent in tree and p not in tree:
                tree.add(p)
                grew = True
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def run_once(path: Path, timeout: int, stall: int) -> bool:
    """One attempt in a child process; False if it failed or stalled (client and kernel both idle)."""
    pid = os.fork()
    if pid == 0:
        try:
            execute(path, timeout)  # exits with status 0 once the notebook is saved
        except BaseException:  # a cell raised, or the kernel died: report, never fall through
            traceback.print_exc()
        finally:
            os._exit(1)
    last_cpu, last_change = -1.0, time.time()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(5)
        cpu = tree_cpu_seconds(pid)
        if cpu > last_cpu + 0.5:
            last_cpu, last_change = cpu, time.time()
        elif time.time() - last_change > stall:
            # nbclient sometimes never sees the end of a cell that drives ipywidgets Output widgets
            print(f"{path}: no progress for {stall} s, retrying", file=sys.stderr)
            for child in [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]:
                try:
                    if int((Path("/proc") / str(child) / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                        os.kill(child, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell (a hang guard)")
    parser.add_argument("--stall", type=int, default=90, help="retry after this many idle seconds")
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    for path in args.notebooks:  # one child process per notebook: each exits after saving
        if not any(run_once(path, args.timeout, args.stall) for _ in range(args.tries)):
            print(f"{path}: failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
