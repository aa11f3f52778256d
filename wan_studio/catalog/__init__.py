"""What models exist: specs, loading from disk or the Hub, and the offline tiny models."""

from wan_studio.catalog.specs import CATALOG, ComponentSpec, ModelSpec, get_spec

__all__ = ["CATALOG", "ComponentSpec", "ModelSpec", "get_spec"]
