"""A plugin for the tests of the extension seam: fills ``ticket`` and decorates jobs."""

from everest_app.errors import BadRequestError


def setup(server):
    async def prepare(user, app, inputs):
        if not isinstance(inputs, dict):
            return inputs
        if inputs.get("ticket") == "refuse":
            raise BadRequestError("the relay refused: no tickets today")
        return {**inputs, "ticket": inputs.get("ticket") or f"ticket-for-{user}"}

    def decorate(job):
        return {"session": {"url": f"http://relay.invalid/{job['id']}/", "state": "starting"}}

    server.hooks.add_input_preparer("daemon", prepare)
    server.hooks.add_job_decorator("daemon", decorate)

    async def stopped():
        (server.data_dir / "plugin-stopped").write_text("ok")

    server.hooks.add_stop_callback(stopped)
