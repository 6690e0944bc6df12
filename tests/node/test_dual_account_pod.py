"""Dual-account PostgreSQL rotation is zero-downtime for a real pod that mounts the projected Secret.

A ManagedSecret of type Database (engine postgresql, mode dual, two accounts made for the test) is projected
into a Secret; a Pod on the local node mounts it as a volume and logs in to a real PostgreSQL server about
five times a second with whatever the files hold, logging one line per attempt. The kubelet rewrites the
files only at the Pod's next sync, a minute or so after each rotation, so the pod keeps using the previous
account all that time: dual mode must keep that account working until the next rotation. Three rotations;
for each the test waits until the pod logs in with the new account, checking meanwhile (psycopg, from the
test) that the previous account still logs in with its password. Then not one of the pod's attempts may have
failed, and none may be missing from its log.

The PostgreSQL server is hack/databases.sh's: the one CI starts (MSO_PG_* in the environment), else one
started here in a temporary directory and stopped at the end. The operator runs as a process with its own
ServiceAccount (``node_operator``); the pod's client is Python and psycopg from the operator image
(``operator_image``). Figures are printed in the terminal summary, not asserted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest
from kubernetes import client

from support.databases import ADMIN_SECRET, Postgres, database_servers, unique
from support.operator import OperatorEnvironment, annotate, create, get_ms, managed_secret, secret_data, wait_ready

from .conftest import FIGURES, NodeCluster, OperatorImage, tail, wait_for
from .test_node import PROPAGATION_LIMIT, _logs, _phase

# The image build (seconds from buildah's cache) and three kubelet syncs of about a minute each.
pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

NAME = "app-db"
POD = "db-client"
MOUNT = "/etc/app-db"
ROTATIONS = 3
# The pod aims at an attempt every 0.2 s plus the login; its log must show at least one every this many
# seconds on average (a count bound: attempts >= span / this), so a stalled client cannot pass for a healthy one.
MAX_MEAN_SECONDS_PER_ATTEMPT = 2.0

# The pod's client. Each attempt reads the mounted files afresh, logs in, runs SELECT current_user and prints
# "<attempt> <unix time> <user> OK" or "<attempt> <unix time> <user> FAIL <error class>" (never a password).
# The kubelet writes each new version of the Secret into a new directory and then swaps the ``..data`` symlink
# to it: files read one by one across that swap could mix two versions (the old username with the new
# password), so the client reads them again until ``..data`` stayed put, as an application should.
CLIENT = """
import os, sys, time
import psycopg

mount = sys.argv[1]
keys = ("username", "password", "host", "port", "dbname")


def snapshot():
    while True:
        link = os.readlink(os.path.join(mount, "..data"))
        values = {}
        for key in keys:
            with open(os.path.join(mount, key)) as f:
                values[key] = f.read()
        if os.readlink(os.path.join(mount, "..data")) == link:
            return values


attempt = 0
while True:
    attempt += 1
    user, result = "-", "FAIL"
    try:
        creds = snapshot()
        user = creds["username"]
        with psycopg.connect(
            host=creds["host"], port=int(creds["port"]), dbname=creds["dbname"],
            user=user, password=creds["password"], connect_timeout=5,
        ) as conn:
            (user,) = conn.execute("SELECT current_user").fetchone()
        result = "OK"
    except Exception as e:
        result = "FAIL " + type(e).__name__
    print(f"{attempt} {time.time():.3f} {user} {result}", flush=True)
    time.sleep(0.2)
"""
LINE = re.compile(r"^(\d+) (\d+\.\d+) (\S+) (OK|FAIL)(?: (\S+))?$")


@dataclass(frozen=True)
class Attempt:
    seq: int
    at: float  # unix time, the pod's clock: the node is this machine, so the test's clock too
    user: str
    ok: bool


def attempts(log: str) -> list[Attempt]:
    parsed = []
    for line in log.splitlines():
        match = LINE.match(line.strip())
        assert match, f"the client printed something else than an attempt: {line!r}\n{tail(log, 20)}"
        parsed.append(Attempt(int(match[1]), float(match[2]), match[3], match[4] == "OK"))
    return parsed


def first_login(log: list[Attempt], user: str, after_seq: int) -> Attempt | None:
    return next((a for a in log if a.seq > after_seq and a.ok and a.user == user), None)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """hack/databases.sh's PostgreSQL server: CI's (MSO_PG_* set), or one started here and stopped after."""
    with database_servers("mso-node-databases-") as env:
        server = Postgres(env)
        yield server
        server.drop_accounts()


def decoded(node_cluster: NodeCluster, ns: str) -> dict[str, str]:
    return {k: v.decode() for k, v in secret_data(node_cluster.api, ns, NAME).items()}


def client_pod(image: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=POD),
        spec=client.V1PodSpec(
            # PostgreSQL listens on 127.0.0.1 only, and the node runs on this machine: in the host's network
            # namespace the pod reaches it at the address the ManagedSecret names, as the operator does.
            host_network=True,
            # A crash of the client must show, not be hidden by a restart that starts counting again.
            restart_policy="Never",
            termination_grace_period_seconds=1,
            containers=[
                client.V1Container(
                    name="client",
                    image=image,
                    image_pull_policy="Never",  # imported into containerd: nothing can be pulled here
                    command=["python", "-u", "-c", CLIENT, MOUNT],
                    # The whole Secret as a volume (no subPath, no env): the kubelet updates these files.
                    volume_mounts=[client.V1VolumeMount(name="creds", mount_path=MOUNT, read_only=True)],
                )
            ],
            volumes=[client.V1Volume(name="creds", secret=client.V1SecretVolumeSource(secret_name=NAME))],
        ),
    )


def wait_for_switch(
    core: client.CoreV1Api, ns: str, postgres: Postgres, *, previous: dict[str, str], new_user: str, after_seq: int
) -> tuple[Attempt, int]:
    """The pod's first login as ``new_user`` after attempt ``after_seq``; until then, the previous credentials
    (which the pod may still be using) must keep logging in. Returns the attempt and how often that was checked."""
    checks = 0

    def switched() -> Attempt | None:
        nonlocal checks
        assert postgres.can_login(previous["username"], previous["password"]), (
            f"the previous account {previous['username']} was refused while the pod may still use it"
        )
        checks += 1
        return first_login(attempts(_logs(core, ns, POD, 400)), new_user, after_seq)

    found: Attempt = wait_for(switched, PROPAGATION_LIMIT, f"the pod to log in as {new_user}", interval=0.5)
    return found, checks


def test_dual_account_rotations_never_fail_a_pod_that_mounts_the_secret(
    node_cluster: NodeCluster,
    node_namespace: str,
    node_operator: OperatorEnvironment,
    operator_image: OperatorImage,
    postgres: Postgres,
) -> None:
    api, ns = node_cluster.api, node_namespace
    core = client.CoreV1Api(api)
    users = [unique("pod_a"), unique("pod_b")]
    for user in users:
        postgres.create_account(user)
    core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=ADMIN_SECRET),
            string_data={k: v.decode() for k, v in postgres.admin_secret().items()},
        ),
    )
    create(api, ns, managed_secret(NAME, type="Database", database=postgres.spec(usernames=users, mode="dual")))
    wait_ready(api, ns, NAME)
    previous = decoded(node_cluster, ns)
    assert previous["username"] == users[0]
    assert previous["host"] == "127.0.0.1" and previous["port"] == str(postgres.port)

    core.create_namespaced_pod(ns, client_pod(operator_image.ref))
    wait_for(lambda: _phase(core, ns, POD) == "Running", 120, "the client pod to run")
    pod = core.read_namespaced_pod(POD, ns)
    assert pod.spec.node_name == node_cluster.node_name and pod.spec.host_network
    first = wait_for(
        lambda: first_login(attempts(_logs(core, ns, POD, 50)), users[0], 0), 60, f"a login as {users[0]}"
    )

    finished: list[float] = []  # when each rotation's new version became current (unix time)
    switches: list[Attempt] = [first]  # the pod's first login as each current account
    checks: list[int] = []
    for n in range(2, 2 + ROTATIONS):
        annotate(api, ns, NAME, {"managedsecrets.io/rotate": f"pod-r{n}"})
        wait_for(
            lambda n=n: (get_ms(api, ns, NAME).get("status") or {}).get("currentVersion") == f"v{n}",
            120,
            f"v{n} to become current",
            interval=0.1,
        )
        finished.append(time.time())
        current = wait_for(
            lambda old=previous["password"]: (c := decoded(node_cluster, ns))["password"] != old and c,
            30,
            f"v{n} in the projected Secret",
            interval=0.1,
        )
        # Dual mode: the account that was not current got a new password and became current.
        assert current["username"] == users[(n - 1) % 2] != previous["username"]
        assert postgres.can_login(current["username"], current["password"])
        switch, checked = wait_for_switch(
            core, ns, postgres, previous=previous, new_user=current["username"], after_seq=switches[-1].seq
        )
        switches.append(switch)
        checks.append(checked)
        previous = current

    log = attempts(_logs(core, ns, POD))
    pod = core.read_namespaced_pod(POD, ns)
    assert pod.status.phase == "Running" and pod.status.container_statuses[0].restart_count == 0
    failures = [a for a in log if not a.ok]
    assert failures == [], f"{len(failures)} of the pod's {len(log)} logins failed, first: {failures[:5]}"
    # Every attempt is in the log, numbered from 1 without a hole, and they kept coming.
    assert [a.seq for a in log] == list(range(1, len(log) + 1))
    span = log[-1].at - log[0].at
    assert len(log) >= span / MAX_MEAN_SECONDS_PER_ATTEMPT, f"{len(log)} attempts in {span:.0f}s"
    # The pod kept logging in with the previous account after rotations had finished: the window dual mode
    # covers was really there (the kubelet had not yet rewritten the files), and it had no failure in it.
    on_previous = [
        sum(1 for a in log if before.seq <= a.seq < after.seq and a.at >= done and a.user == before.user)
        for before, after, done in zip(switches[:-1], switches[1:], finished, strict=True)
    ]
    assert sum(on_previous) > 0, on_previous
    assert all(c > 0 for c in checks), checks

    gaps = [after.at - done for after, done in zip(switches[1:], finished, strict=True)]
    between = max(b.at - a.at for a, b in pairwise(log))
    FIGURES[f"dual-account rotation done -> pod logs in as the new account (worst of {ROTATIONS})"] = (
        f"{max(gaps):.1f}s (each: {', '.join(f'{g:.1f}s' for g in gaps)})"
    )
    FIGURES["pod logins over the dual-account rotations"] = (
        f"{len(log)} attempts, {len(failures)} failures, {sum(on_previous)} on the previous account after a "
        f"rotation finished; longest pause between attempts {between:.2f}s"
    )
