"""Where a py-spy profile of ``bench.pipeline`` spends its time, per Dagster step and per function.

Record: ``py-spy record --nonblocking -r 20 -f raw -o PROFILE -- .venv/bin/python -m bench.pipeline --events N``
(or ``--pid`` of a running benchmark). Then: ``python -m bench.profile_summary PROFILE [--top 15]``.

``-f raw`` writes one line per distinct stack (``frame;frame;... count``). A sample belongs to the
step whose asset function is on its stack; within a step, "inclusive" counts every function on the
stack and "self" only the innermost one. Inclusive lists only this project's functions below the
step function (so it says which of our calls bounds a stage); self lists any frame (which library
call the time is finally spent in).
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Sequence
from pathlib import Path

#: Asset functions (Dagster step bodies) -> reported stage.
STEP_FUNCTIONS = {
    "ingest": "ingest",
    "validate_interactions": "validate",
    "recsys_dbt_assets": "dbt",
    "train_and_register": "train (all models)",
    "model_evaluation": "evaluate",
    "publish_recommendations": "publish",
}
FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def parse(profile: Path) -> list[tuple[list[tuple[str, str, str]], int]]:
    stacks = []
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = []
        for text in stack.split(";"):
            match = FRAME.match(text)
            if match:
                frames.append((match["function"], match["file"], match["line"] or ""))
        stacks.append((frames, int(count)))
    return stacks


def short(frame: tuple[str, str, str]) -> str:
    function, file, line = frame
    path = file.split("site-packages/")[-1] if "site-packages/" in file else file.split("/work/main/")[-1]
    return f"{function} ({path}:{line})" if line else f"{function} ({path})"


def stage_of(frames: list[tuple[str, str, str]]) -> str | None:
    for function, _, _ in frames:
        if function in STEP_FUNCTIONS:
            return STEP_FUNCTIONS[function]
    return None


def summarize(profile: Path, top: int) -> str:
    stacks = parse(profile)
    total = sum(count for _, count in stacks)
    per_stage: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self_time: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    stage_total: collections.Counter = collections.Counter()
    for frames, count in stacks:
        stage = stage_of(frames) or "outside steps"
        stage_total[stage] += count
        for name in {short((f, file, "")) for f, file, _ in frames}:
            per_stage[stage][name] += count
        if frames:
            self_time[stage][short(frames[-1])] += count
    lines = [f"{total} samples"]
    for stage, count in stage_total.most_common():
        lines.append(f"\n## {stage}: {count / total:.0%} of samples\ninclusive:")
        ours = [(n, c) for n, c in per_stage[stage].most_common() if "recsys_dagster/" in n and c < count]
        lines.extend(f"  {c / count:6.1%}  {n}" for n, c in ours[:top])
        lines.append("self (innermost frame):")
        lines.extend(f"  {c / count:6.1%}  {n}" for n, c in self_time[stage].most_common(top))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    print(summarize(args.profile, args.top))


if __name__ == "__main__":
    main()
