"""The dashboard process (`python -m actorhub.dashboard`): the head's HTTP server. It serves Ray's
Job REST API (`job_routes`) and runs submitted jobs (`job_manager`); its routes are added per
module (`server.ROUTE_MODULES`), so the dashboard page and metrics join the same server."""
