"""Scripts call the endpoints by name and leave out what they do not set (a real server and
gradio_client); what they set reaches the job, through the field table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from wan_studio.ui.advanced_form import FORM_FIELDS
from wan_studio.ui.jobs_api import API_FIELDS
from tests.fields import files, samples

# The only inputs a script must give: what to make, and which job it means.
REQUIRED = {("/generate", "prompt"), ("/intermediate", "scene_prompt"), ("/submit", "prompt"),
            ("/job_status", "job_id"), ("/cancel_job", "job_id"), ("/job_result", "job_id")}
# Every API field of the table at once, valid together on the demo model.
API_SETTINGS = {"model": "demo", "negative_prompt": "blurry", "width": 192, "height": 320, "num_frames": 9,
                "fps": 12, "steps": 3, "guidance": 3.5, "guidance_2": 2.5, "shift": 7.0, "framing": "crop"}


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, str]:
    return files(tmp_path_factory.mktemp("named"))


def test_every_optional_input_has_an_api_default(client: Client) -> None:
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    required = {(name, p["parameter_name"]) for name, ep in api.items() for p in ep["parameters"]
                if not p["parameter_has_default"]}
    assert required == REQUIRED
    for name in ("/advanced_generate", "/advanced_cost", "/advanced_calibrate"):
        assert [p["parameter_name"] for p in api[name]["parameters"]] == list(FORM_FIELDS)
    assert {"prompts", "seeds", "first_seed"} <= {p["parameter_name"] for p in api["/advanced_batch"]["parameters"]}


def test_generate_with_only_a_prompt(client: Client) -> None:
    _video, _files, params, status = client.predict(prompt="a paper boat on a river", api_name="/generate")
    assert "Done in" in status and params["request"]["prompt"] == "a paper boat on a river"
    assert params["request"]["image"] is None


def test_advanced_endpoints_by_name_and_a_table_field_reaching_the_pipeline(client: Client, made) -> None:
    line, _auto = client.predict(prompt="a fox", width=64, height=64, frames=5, api_name="/advanced_cost")
    assert "64×64" in line and "5 frames" in line
    # pose_video has no hand-laid widget: the tab made its input from the field table.
    _video, files_, sidecar, status = client.predict(
        model="demo-s2v", prompt="a person talks", image=handle_file(made["portrait"]),
        audio=handle_file(made["audio"]), pose_video=handle_file(made["pose_video"]), steps=2, seed=3,
        api_name="/advanced_generate")
    assert "Done in" in status and sidecar["pose"] is True and sidecar["request"]["steps"] == 2
    assert Path(sidecar["request"]["pose_video"]).name.endswith(".mp4")


def every_api_setting(made: dict[str, str]) -> dict[str, Any]:
    """``API_SETTINGS`` and the sample of any API field of the table not in it."""
    return {**{n: samples(made)[n][n] for n in API_FIELDS}, **API_SETTINGS}


def test_submit_carries_every_api_field(client: Client, server, made) -> None:
    settings = every_api_setting(made)
    job_id = client.predict(prompt="a kite named by the table", settings_json=json.dumps(settings), api_name="/submit")
    stored = server.studio.queue.get(job_id).request
    assert {k: stored[k] for k in settings} == settings
