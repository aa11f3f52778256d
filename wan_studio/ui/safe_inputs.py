"""Upload components that turn an unreadable file into a clear message instead of a server error.

Gradio's own ``gr.Image`` opens every upload with PIL before our handler runs; a corrupt, truncated
or zero-byte file, or one declaring a gigapixel size, then fails inside Gradio with a stack trace in
the log and a generic error for the user. These subclasses catch that and say what to do.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError


class ImageInput(gr.Image):
    """``gr.Image`` whose unreadable uploads raise a ``gr.Error`` the user can act on."""

    def get_block_name(self) -> str:
        """The browser draws it with Gradio's own image widget."""
        return "image"

    def preprocess(self, payload: Any) -> Any:
        """Gradio's preprocessing, with image decoding failures worded for the user."""
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError:
            raise gr.Error("the image declares an enormous size (a decompression bomb?); use a normal "
                           "PNG, JPEG or WebP picture", print_exception=False) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise gr.Error(f"the uploaded image cannot be read ({type(e).__name__}); use a PNG, JPEG or "
                           "WebP file", print_exception=False) from None


class AudioInput(gr.Audio):
    """``gr.Audio`` whose unreadable uploads raise a ``gr.Error`` the user can act on."""

    def get_block_name(self) -> str:
        """The browser draws it with Gradio's own audio widget."""
        return "audio"

    def preprocess(self, payload: Any) -> Any:
        """Gradio's preprocessing, with audio decoding failures worded for the user."""
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure means "not a usable audio file"
            raise gr.Error(f"the uploaded audio cannot be read ({type(e).__name__}); use a WAV, MP3, FLAC or "
                           "M4A file", print_exception=False) from None
