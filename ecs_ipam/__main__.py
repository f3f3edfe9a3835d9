"""Lets `python -m ecs_ipam` run the plugin."""

from ecs_ipam.cli import main

main()
