# medswarm images, from one file (scripts/docker-image.sh builds both; docs/docker-image.md).
#   --target chain  -> medswarm-chain: anvil on 0.0.0.0:8545, the consortium's chain
#   --target node   -> medswarm (the default, last stage): one hospital node, entrypoint `medswarm`
# The base image is an argument: the public python:3.11-slim by default, or a local Debian
# bookworm image (python3 at /usr/bin) where no registry is reachable. Python packages come from
# wheelhouse/ when it holds wheels (offline: --no-index), otherwise from the package index.
# Written for the classic builder too (no RUN --mount, no COPY --chmod): Debian's engine has it.

ARG BASE_IMAGE=python:3.11-slim

# --- the chain: one static-ish binary (glibc only), nothing else ------------------------------
FROM ${BASE_IMAGE} AS chain
RUN groupadd --gid 10001 medswarm \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin medswarm
# From the npm package @foundry-rs/anvil (scripts/setup.sh installs it).
COPY node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil
USER 10001:10001
ENV HOME=/tmp
EXPOSE 8545
# Anvil answers JSON-RPC: ask it for the chain id (python3 is in both base images; no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["python3", "-c", \
    "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8545', data=b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\",\"params\":[]}', headers={'Content-Type': 'application/json'}), timeout=4)"]
# Extra arguments given to `docker run IMAGE ...` are appended (e.g. --chain-id 1337).
ENTRYPOINT ["anvil", "--host", "0.0.0.0", "--port", "8545"]

# --- builder: a venv with the dependencies, from the wheelhouse when there is one -------------
FROM ${BASE_IMAGE} AS builder
# The CPU-only PyTorch index, used only when no wheelhouse is given (a normal, online machine).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# `python3 -m venv` links the base's own python (/usr/bin or /usr/local/bin): the runtime stage
# has the same base, so the venv works there unchanged.
RUN python3 -m venv /opt/venv
COPY pyproject.toml /tmp/pyproject.toml
# The dependency list is read from pyproject.toml, so it has one home; setuptools is added for
# the editable install of the project in the runtime stage.
RUN python3 -c "import tomllib; d = tomllib.load(open('/tmp/pyproject.toml', 'rb')); \
print('\n'.join([*d['project']['dependencies'], *d['build-system']['requires']]))" \
    > /tmp/requirements.txt
COPY wheelhouse/ /wheels/
RUN if ls /wheels/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-index --find-links /wheels -r /tmp/requirements.txt; \
    else \
        /opt/venv/bin/pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements.txt; \
    fi

# --- the node --------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS node
RUN groupadd --gid 10001 medswarm \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin medswarm \
    && mkdir -p /data /keys /state /config \
    && chown 10001:10001 /state
COPY --from=builder /opt/venv /opt/venv
# The source tree stays whole (root-owned, read-only to the node): ledger/artifacts.py finds the
# contract artifacts in contracts/ beside the packages, which a plain wheel install would lose.
COPY pyproject.toml README.md /opt/medswarm/
COPY contracts /opt/medswarm/contracts
COPY data /opt/medswarm/data
COPY gossip /opt/medswarm/gossip
COPY ledger /opt/medswarm/ledger
COPY medswarm /opt/medswarm/medswarm
COPY node /opt/medswarm/node
COPY sim /opt/medswarm/sim
RUN /opt/venv/bin/pip install --quiet --no-index --no-deps --no-build-isolation \
        --disable-pip-version-check -e /opt/medswarm \
    && rm -rf /opt/medswarm/build \
    && /opt/venv/bin/python -m compileall -q /opt/medswarm
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# /data: records and schema (mount read-only); /keys: identity.key, eth.key (read-only, files
# owned by 10001 with mode 0600); /state: checkpoints, metrics, models, outbox (writable).
# The image holds no key: `medswarm node init` makes them on the hospital's machine.
VOLUME ["/data", "/keys", "/state"]
WORKDIR /state
USER 10001:10001
EXPOSE 4001
# Healthy while the node's libp2p port accepts connections (see `medswarm node health --help`).
HEALTHCHECK --interval=30s --timeout=30s --start-period=60s --retries=3 \
    CMD ["medswarm", "node", "health", "--config", "/config/node.toml"]
ENTRYPOINT ["medswarm"]
CMD ["node", "run", "--config", "/config/node.toml", "--quiet", "--log-level", "INFO"]
