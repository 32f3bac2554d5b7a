"""Train the hold-out study's remaining runs with the frozen code, resuming from the committed files.

Run by holdout_run.sh from the frozen commit's experiments/ folder (the current directory), with the frozen
package first on PYTHONPATH: the frozen holdout_study.py and common.py do the training, exactly as
pre-registered; holdout_resume (protocol amendment 2) restores the committed databases and answers for the
trials whose run folders are not on this machine. The frozen code's own summaries and per-configuration
records are not written (its record format is older than the analysis'): ``python experiments/holdout_study.py
--scale cpu --summarise`` from the checkout writes them and copies the databases.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    frozen = Path.cwd()
    if not (frozen / "holdout_study.py").is_file() or frozen == HERE:
        sys.exit("run from the frozen worktree's experiments/ folder (experiments/holdout_run.sh does)")
    sys.path.insert(0, str(frozen))
    import common  # the frozen harness
    import holdout_study

    spec = importlib.util.spec_from_file_location("holdout_resume", HERE / "holdout_resume.py")
    assert spec is not None and spec.loader is not None
    resume = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(resume)
    scale = sys.argv[sys.argv.index("--scale") + 1] if "--scale" in sys.argv else "smoke"
    n = resume.resume(common, holdout_study.report, scale)
    print(f"resuming: {n} finished trials read from the committed records", flush=True)
    # the frozen code would rewrite docs/results/holdout/<scale>/*.json in its older record format
    holdout_study.write_summary = lambda *args, **kwargs: None
    common.write_json = lambda *args, **kwargs: None
    holdout_study.main(sys.argv[1:])


if __name__ == "__main__":
    main()
