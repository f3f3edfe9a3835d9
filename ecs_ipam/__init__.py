"""ecs-ipam: the Amazon ECS IPAM plugin for CNI, in standard-library Python."""
