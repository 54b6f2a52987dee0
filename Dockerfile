# InSAR Pipeline batch image: ISCE2 from conda-forge, the pipeline's Python stack and its code.
# Build and run it with ./run_docker.sh: it rebuilds the image when this file or environment.yml
# changes, and mounts ./code over the copy made here, so code edits need no rebuild.
#
# conda-forge builds isce2 for linux-64 only, so run_docker.sh builds and runs the image with
# --platform linux/amd64 (emulated by Docker Desktop on Apple silicon).
# No HEALTHCHECK: this is a batch job, not a service; its exit code is its health.

ARG MICROMAMBA_TAG=1.5.8-bookworm-slim
FROM mambaorg/micromamba:${MICROMAMBA_TAG}

ARG VERSION=0.1.0
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="InSAR Pipeline" \
      org.opencontainers.image.description="Sentinel-1 IW SLC pairs to geocoded interferograms with ISCE2 topsApp, in parallel, resumable batches" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# One layer: solve and create the environment, then drop the package caches it leaves behind.
COPY --chown=$MAMBA_USER:$MAMBA_USER environment.yml /tmp/environment.yml
RUN micromamba create --yes --file /tmp/environment.yml \
    && micromamba clean --all --yes \
    && rm /tmp/environment.yml

# The micromamba entrypoint activates $ENV_NAME (the name in environment.yml). PYTHON_VERSION
# is environment.yml's python pin: the conda package installs ISCE2 as site-packages/isce2 with
# an `isce` symlink, and ISCE_HOME is that `isce` folder, as `import isce` itself would set it.
# Its applications (topsApp.py, fixImageXml.py...) are meant to be found on PATH: its CMake
# install links them into the environment's bin/; $ISCE_HOME/applications covers builds that don't.
ARG PYTHON_VERSION=3.11
ENV ENV_NAME=insar-pipeline
ENV ISCE_HOME=/opt/conda/envs/insar-pipeline/lib/python${PYTHON_VERSION}/site-packages/isce
ENV PATH=/opt/conda/envs/insar-pipeline/bin:${ISCE_HOME}/applications:${ISCE_HOME}/bin:${PATH} \
    PROJ_DATA=/opt/conda/envs/insar-pipeline/share/proj \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Fail the build, not the first run, when ISCE2 is not where ISCE_HOME and PATH say it is.
# (topsApp.py writes logs into its current folder: it runs in a scratch one.)
ARG MAMBA_DOCKERFILE_ACTIVATE=1
# hadolint ignore=DL3003
RUN test -x "${ISCE_HOME}/applications/topsApp.py" \
    && test -x "${ISCE_HOME}/applications/fixImageXml.py" \
    && python -c "import isce, osgeo.gdal, lxml.etree, pydantic, dask.distributed, matplotlib, h5py, asf_search, burst2safe" \
    && python -c "import isce; print('ISCE2', isce.__version__, 'at', isce.__file__)" \
    && probe=$(mktemp -d) \
    && (cd "$probe" && topsApp.py --help --steps > /dev/null) \
    && rm -rf "$probe"

# /data is where run_docker.sh mounts the data folder; without a mount the image still runs
# with its own /data. Group 0 may write it, for platforms that run images under any UID.
# /app/data makes the pipeline's default `--data ./data` land on /data.
USER root
RUN mkdir -p /data/raw /data/orbit_data /data/dem /data/runs /app \
    && chown -R "${MAMBA_USER}:0" /data \
    && chmod -R g+rwX /data \
    && ln -s /data /app/data
COPY code/ /app/code/
# mambauser, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER ${MAMBA_USER_ID}
WORKDIR /app

# The micromamba entrypoint activates the environment, then our checks run and exec the
# scheduler (bash runs the script, so a checkout that lost the exec bit still works).
# SIGINT, like Ctrl-C: `docker stop` lets the pipeline save its state for the next run.
ENTRYPOINT ["/usr/local/bin/_entrypoint.sh", "bash", "/app/code/entrypoint.sh"]
CMD ["run"]
STOPSIGNAL SIGINT
