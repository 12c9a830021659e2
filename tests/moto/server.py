"""moto_server, plus the one ECS behaviour the bench needs and moto lacks: the deployment
circuit breaker.

Tagging a service with `wikiops-test:circuit-breaker=trip` does to DescribeServices what ECS's
circuit breaker (rollback on) does: the PRIMARY deployment stays listed as ACTIVE with the
rollout state FAILED, and a new PRIMARY deployment (same task definition) starts. The tag is
not kept. Everything else is moto's own behaviour (`moto_server` arguments).
"""

import copy
import sys

from moto.core.utils import utcnow
from moto.ecs import models
from moto.moto_api._internal import mock_random
from moto.server import main

TRIP = "wikiops-test:circuit-breaker"
_tag_resource = models.EC2ContainerServiceBackend.tag_resource


def tag_resource(self, arn, tags):
    if tags.get(TRIP) == "trip" and ":service/" in arn:
        service = self._get_resource(arn, self._parse_resource_arn(arn))
        if service.deployments:
            failed = service.deployments[0]
            new = copy.deepcopy(failed)
            now = utcnow()
            failed.update(
                status="ACTIVE",
                rolloutState="FAILED",
                rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
                updatedAt=now,
            )
            new.update(
                id=f"ecs-svc/{mock_random.randint(0, 32**12)}",
                createdAt=now,
                updatedAt=now,
                rolloutState="IN_PROGRESS",
                rolloutStateReason="ECS deployment in progress.",
            )
            service.deployments = [new, failed]
        tags = {k: v for k, v in tags.items() if k != TRIP}
        if not tags:
            return
    _tag_resource(self, arn, tags)


models.EC2ContainerServiceBackend.tag_resource = tag_resource

if __name__ == "__main__":
    sys.exit(main())
