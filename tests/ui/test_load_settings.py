"""The Advanced tab's "Load these settings" on a real server: a dropped video fills the form."""

from __future__ import annotations

import numpy as np

from wan_studio.engine.video_io import write_mp4
from wan_studio.ui.advanced_form import FILE_FIELDS, FORM_FIELDS

LOADED = [n for n in FORM_FIELDS if n not in FILE_FIELDS]


def made_here(demo_pipe, folder, **fields) -> str:
    """A video as the app makes it (the engine's own generate and record), with ``fields`` in its request."""
    from wan_studio.engine.generate import generate
    from wan_studio.engine.request import GenerationRequest, validate

    base = dict(prompt="a glass whale", model="demo", width=64, height=64, num_frames=5, fps=8, steps=2, seed=1)
    return str(generate(demo_pipe, validate(GenerationRequest(**{**base, **fields})), folder).video_path)


def test_a_dropped_video_fills_the_form_and_a_foreign_one_is_refused(server, demo_pipe, tmp_path) -> None:
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    video = made_here(demo_pipe, tmp_path, seed=4321, steps=3, width=96, height=64, framing="crop")
    *form, _size, said = client.predict(handle_file(video), api_name="/advanced_load_settings")
    got = dict(zip(LOADED, form))
    assert "from the video itself" in said and "seed 4321" in said
    assert got["prompt"] == "a glass whale" and got["seed"] == 4321 and got["steps"] == 3
    assert (got["width"], got["height"], got["framing"]) == (96, 64, "crop")
    foreign = write_mp4(tmp_path / "holiday.mp4", np.zeros((2, 16, 16, 3), np.uint8), 8)
    *_, said = client.predict(handle_file(str(foreign)), api_name="/advanced_load_settings")
    assert said.startswith("**Cannot load these settings:**") and "holiday.mp4 carries no Wan Studio settings" in said
