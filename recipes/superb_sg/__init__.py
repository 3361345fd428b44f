"""SUPERB-SG's generative tasks, declared and runnable, not yet among the built-ins.

`se.py` (speech enhancement) and `ss.py` (source separation), each beside its recipe YAML, as the built-in
tasks are; they live in this subpackage because a built-in task is part of `--task all`, whose CI baseline
(leaderboard/baseline-ci.json) has no rows for them yet. Run them by file:

    superbench run --upstream fbank --task recipes/superb_sg/se.py:TASK,recipes/superb_sg/ss.py:TASK --data DIR

Moving the four files up to `recipes/` (and regenerating the CI baseline with rows for them) makes them
built-ins.
"""

#: The tasks declared here: the demo corpus has parts for them (recipes/prepare/demo_se.py, demo_ss.py).
STAGED_TASKS = ("se", "ss")
