"""What every command starts from: the workspace, its configuration and its target graph."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from buildtool.analysis import Analyses
from buildtool.graph import TargetGraph, build_graph
from buildtool.loader import load_workspace
from buildtool.workspace import Config, find_root, load_config


@dataclass
class Session:
    """The workspace seen from the current directory."""

    cwd: Path

    @classmethod
    def here(cls) -> Session:
        return cls(Path(os.getcwd()))

    @cached_property
    def root(self) -> Path:
        return find_root(self.cwd)

    @cached_property
    def config(self) -> Config:
        return load_config(self.root)

    @cached_property
    def analyses(self) -> Analyses:
        """The workspace's Dockerfile analyses, shared by the graph and the file sets."""
        return Analyses(self.config)

    @cached_property
    def graph(self) -> TargetGraph:
        config = self.config
        graph = build_graph(load_workspace(config), self.analyses, config.registry)
        self.analyses.save()  # what inference learnt serves the next run, whatever it does
        return graph

    @cached_property
    def current_package(self) -> str:
        """The package of the current directory, for relative labels like ``:name``."""
        rel = os.path.relpath(self.cwd.resolve(), self.root)
        return "" if rel == "." else rel.replace(os.sep, "/")
