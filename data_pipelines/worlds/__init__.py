"""Synthetic worlds for the MSM experiment: a YAML world -> corpora, specs, AFT chats, suites."""

from data_pipelines.worlds.build import WorldData
from data_pipelines.worlds.corpora import Sizes
from data_pipelines.worlds.specs import VARIANTS, assistant_spec
from data_pipelines.worlds.world import World, WorldError, load_world

WORLDS_DIR = __import__("pathlib").Path(__file__).resolve().parent
