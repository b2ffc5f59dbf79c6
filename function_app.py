"""Azure Functions entry point: wiring only. Each feature lives in its own blueprint under blueprints/."""

import azure.durable_functions as df
import azure.functions as func

from blueprints.batch_runs import bp as batch_runs
from blueprints.batch_sets import bp as batch_sets
from blueprints.chat_runs import bp as chat_runs
from blueprints.health import bp as health
from blueprints.import_sync import bp as import_sync
from blueprints.inputs_api import bp as inputs_api
from blueprints.jobs_api import bp as jobs_api
from blueprints.runs_api import bp as runs_api

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health, jobs_api, import_sync, inputs_api, runs_api, batch_runs, batch_sets, chat_runs):
    app.register_functions(blueprint)
