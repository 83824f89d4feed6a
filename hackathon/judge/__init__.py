"""Judging: the teams' submissions and the hidden truth in, a ranked leaderboard out.

Takes each team's folder or zip (`submissions`: discovery, limits, safe extraction), checks an
exported model before running it (`model_check`) in a child process with a time limit
(`sandbox`), scores every team on the truth (`score`, with `hackathon.evaluate.metrics`), ranks
them with intervals and ties (`ranking`), keeps the history in SQLite (`history`), writes the
board files (`board`) and serves the live page (`serve`).
"""
