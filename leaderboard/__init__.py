"""Local leaderboard: results store, SUPERB score, tables, HTML report and the CI check.

- `leaderboard.store`: SQLite store of result records (`ResultStore(path).add(record)`).
- `leaderboard.score`: SUPERB score with `paper` or `local` reference points.
- `leaderboard.table`: upstreams x tasks table (md/csv/json/html).
- `leaderboard.report`: self-contained HTML report with figures.
- `leaderboard.check`: baseline files and the direction-aware regression check.
"""
