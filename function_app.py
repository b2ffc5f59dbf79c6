"""Azure Functions entry point: wiring only. Each feature lives in its own blueprint under blueprints/."""

import azure.durable_functions as df
import azure.functions as func

from blueprints.health import bp as health

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
