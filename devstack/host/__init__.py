"""The local Azure Functions + Durable Functions host: `python -m devstack host`.

It runs an app's `function_app.py` (Python v2 programming model) unchanged, as the Functions host and the Python
worker would: HTTP triggers under `/api`, timer triggers on NCRONTAB schedules, and Durable Functions with the real
`azure-functions-durable` SDK doing the replay. Orchestration state lives in SQLite so that a crash at any moment
followed by a restart continues every orchestration. Never deployed (`.funcignore` excludes `devstack/`).
"""
