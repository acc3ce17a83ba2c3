"""The registry type every plug-in kind uses (advantages, losses, rewards, ...); see plugins/registry.py."""

from plugins.registry import Plugin, Registry

__all__ = ["Plugin", "Registry"]
