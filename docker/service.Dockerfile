# The image of every model kind's service (text, pose, audio, and any kind that declares a
# `ServiceImage` in its services/<package>/kind.py): `python -m <its service>` on port 8000
# as user 10001. Three build args make it one kind's image; docker/build-images.sh passes them
# from the kind's declaration (`python -m deploy.images` lists them):
#   SERVICE_EXTRA    the pyproject extra to install (text, pose, audio)
#   SERVICE_MODULE   the module the container runs (services.text, ...)
#   SYSTEM_PACKAGES  Debian packages its libraries load, comma-separated (pose: OpenCV's)
#
# Build from the repository root (docker/build-images.sh builds every image, with docker or
# podman, and makes the base offline when no registry answers):
#   docker build -f docker/service.Dockerfile -t mtc-text:0.1.0 \
#     --build-arg SERVICE_EXTRA=text --build-arg SERVICE_MODULE=services.text .
#   (add --build-context wheels=/opt/wheels to take torch's CPU wheel from a directory,
#   --secret id=pip_cert,src=$PIP_CERT behind a TLS-inspecting proxy; docs/images.md)
# No `# syntax=` line: it would make BuildKit pull its frontend from Docker Hub, which fails
# offline; the frontend built into Docker 23+ has every feature used here.
#
# No model is baked in: in Kubernetes an initContainer of this same image runs
# `mtc models pull` into an emptyDir (base/). To bake one in, pass BAKE_MODEL_URI:
#   --build-arg BAKE_MODEL_URI=s3://mtc-models/text/1.0.0 --secret id=aws,src=$HOME/.aws/credentials
#   --build-arg BAKE_MODEL_URI=file:///context/models/text   (a directory under models/ in the
#                                                             build context; see .dockerignore)
# and run the image with MTC_MODEL_URI=file:///opt/mtc/baked/model (its default).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# Where torch's CPU build comes from when no wheel directory is given: PyTorch's CPU index,
# or a mirror of it.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# A directory of wheels: empty unless the build names one with `--build-context wheels=DIR`
# (docker/build-images.sh passes WHEELS when it holds the lock's torch CPU wheel).
FROM scratch AS wheels

# No build arg reaches this stage: building every kind's image installs torch once, and
# their runtime stages share its venv as one layer.
FROM ${PYTHON_IMAGE} AS torch
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
# torch's CPU build first, at the lock's version: the extra's pin is then met, so pip never
# fetches PyPI's multi-GB CUDA build. It comes from the wheels context when that holds the
# wheel (PyTorch's index is then never asked), else from TORCH_INDEX (which fails loudly
# without a CPU build). Behind a TLS-inspecting proxy pip needs its CA bundle: the pip_cert
# build secret is mounted for the pip steps only and lands in no layer.
RUN --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && torch="$(sed -n 's/^torch==//p' /src/constraints.txt)" \
    && if ls "/wheels/torch-$torch+cpu-"*.whl >/dev/null 2>&1; \
        then torch_source="--find-links /wheels"; \
        else torch_source="--extra-index-url $TORCH_INDEX"; fi \
    && pip install $torch_source --constraint /src/constraints.txt "torch==$torch+cpu"
# What the venv holds so far: each later stage copies out only the files it adds, so that
# the runtime stage can stack torch, the dependencies and mtc as separate layers.
RUN cd / && find opt/venv -type f -print0 | xargs -0 sha256sum >/opt/venv.sha256 \
    && find opt/venv | sort >/opt/venv.paths

FROM torch AS deps
# The extra's dependencies before, and apart from, the sources: a change to services/ or
# gateway/ then reinstalls mtc alone and leaves the dependency layers as they were. pip
# resolves an extra only from a buildable project: empty stand-ins for the packages and the
# README serve, and the stand-in mtc is uninstalled again.
ARG SERVICE_EXTRA
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && if [ -z "$SERVICE_EXTRA" ]; then echo "build arg SERVICE_EXTRA is required" >&2; exit 2; fi \
    && mkdir /src/services /src/gateway \
    && touch /src/README.md /src/services/__init__.py /src/gateway/__init__.py \
    && pip install --constraint /src/constraints.txt "/src[${SERVICE_EXTRA}]" \
    && pip uninstall --yes --quiet mtc \
    && rm -r /src/README.md /src/services /src/gateway
# What the dependencies added to torch's stage (/opt/layers/deps). That they changed none
# of its files, which a layer stacked on torch's could not undo, is checked: the build fails
# otherwise.
RUN cd / && sha256sum --quiet --check /opt/venv.sha256 \
    && find opt/venv | sort | comm -13 /opt/venv.paths - >/tmp/added \
    && mkdir -p /opt/layers/deps \
    && tar --no-recursion -cf - -T /tmp/added | tar -xf - -C /opt/layers/deps \
    && find opt/venv -type f -print0 | xargs -0 sha256sum >/opt/venv.sha256 \
    && find opt/venv | sort >/opt/venv.paths

FROM deps AS build
COPY README.md /src/
COPY services /src/services
COPY gateway /src/gateway
RUN --mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-deps --constraint /src/constraints.txt /src
# What mtc itself added (/opt/layers/app), checked the same way.
RUN cd / && sha256sum --quiet --check /opt/venv.sha256 \
    && find opt/venv | sort | comm -13 /opt/venv.paths - >/tmp/added \
    && mkdir -p /opt/layers/app \
    && tar --no-recursion -cf - -T /tmp/added | tar -xf - -C /opt/layers/app

FROM build AS model
ARG BAKE_MODEL_URI=""
# The content digest of a model taken from the build context (docker/build-images.sh passes
# it): podman reuses a cached RUN whatever its bind mount now holds, so a changed model must
# change this step's arguments to be baked again.
ARG BAKE_MODEL_DIGEST=""
# The build context is mounted for file:// URIs; AWS credentials come as a build secret, so
# they never land in a layer.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=aws,target=/root/.aws/credentials,required=false \
    mkdir -p /opt/mtc/baked \
    && if [ -n "$BAKE_MODEL_URI" ]; then \
        echo "baking $BAKE_MODEL_URI ${BAKE_MODEL_DIGEST:+(content $BAKE_MODEL_DIGEST)}" && \
        mtc models pull --cache-dir /tmp/mtc-cache "$BAKE_MODEL_URI" /opt/mtc/baked/model; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE_MODULE
# torch and its dependencies first, straight on the base: the text, pose and audio images
# then share this layer (~900 MB), which a registry stores and a node pulls once.
COPY --from=torch /opt/venv /opt/venv
# The Debian packages the kind's libraries load (pose: OpenCV links against libGL and GLib,
# which neither the registry's slim base nor the Debian-built one has). libgl1 also drags in
# Mesa's drivers and the LLVM they compile shaders with (~160 MB), which only a GL context
# would load and no service opens one: dpkg leaves those files out.
ARG SYSTEM_PACKAGES=""
RUN if [ -n "$SYSTEM_PACKAGES" ]; then \
        printf '%s\n' 'path-exclude=/usr/lib/*/dri/*' 'path-exclude=/usr/lib/*/libLLVM*' \
            'path-exclude=/usr/lib/*/libz3.so*' >/etc/dpkg/dpkg.cfg.d/mtc-no-gl-drivers \
        && apt-get update \
        && apt-get install -y --no-install-recommends $(echo "$SYSTEM_PACKAGES" | tr , ' ') \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN if [ -z "$SERVICE_MODULE" ]; then echo "build arg SERVICE_MODULE is required" >&2; exit 2; fi \
    && groupadd --system --gid 10001 mtc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home mtc \
    && mkdir -p /var/cache/mtc /models \
    && chown 10001:10001 /var/cache/mtc /models
# The root filesystem is read-only in Kubernetes: every cache points at mounted emptyDirs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/var/cache/mtc \
    HF_HOME=/var/cache/mtc/huggingface \
    MTC_HOST=0.0.0.0 \
    MTC_PORT=8000 \
    MTC_MODEL_CACHE_DIR=/var/cache/mtc \
    MTC_MODEL_URI=file:///opt/mtc/baked/model \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    SERVICE_MODULE=${SERVICE_MODULE}
# Then the extra's dependencies, then mtc: a new version of mtc alone changes only the
# last, small layer.
COPY --from=deps /opt/layers/deps/opt/venv /opt/venv
COPY --from=build /opt/layers/app/opt/venv /opt/venv
COPY --from=model /opt/mtc/baked /opt/mtc/baked
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# The shell only expands the module's name and then gives PID 1 to python, which gets the
# signals.
CMD ["/bin/sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
