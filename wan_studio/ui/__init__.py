"""Gradio UI: one module per tab or panel, each with render() and listen(); no generation logic here."""
