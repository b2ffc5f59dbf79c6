"""Azure Functions entry point: wiring only. Each feature lives in its own blueprint under blueprints/."""

import azure.durable_functions as df
import azure.functions as func

from blueprints.health import bp as health
from blueprints.import_sync import bp as import_sync
from blueprints.jobs_api import bp as jobs_api

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
app.register_functions(jobs_api)
app.register_functions(import_sync)
