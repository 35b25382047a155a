import importlib.util
import os
import re

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def release() -> str:
    """The release, kept in one place: ``downstream_tx/__init__.py``."""
    with open(os.path.join(HERE, "downstream_tx", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


class BuildWithCommit(build_py):
    """Writes ``downstream_tx/_build.py`` (the commit the package is built from, when built from a
    git checkout) into the build, so ``--version`` of an installed wheel names it without git."""

    def run(self) -> None:
        super().run()
        # downstream_tx/version.py on its own (the package's dependencies need not be installed)
        spec = importlib.util.spec_from_file_location("_downstream_tx_version", os.path.join(HERE, "downstream_tx",
                                                                                           "version.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        commit = module.git_commit(HERE)
        target = os.path.join(self.build_lib, "downstream_tx", "_build.py")
        with open(target, "w", encoding="utf-8") as f:
            f.write('"""Written by setup.py when this package was built."""\n\n'
                    f"COMMIT = {commit!r}\n")


setup(
    name="downstream-tx",
    version=release(),
    description="A proof-of-storage verification node (Twisted), compatible with downstream-farmer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["downstream_tx", "downstream_tx.*"]) + ["twisted.plugins"],
    package_data={
        "downstream_tx.db": ["schema/*.sql"],
        "downstream_tx.dashboard": ["static/*"],
        "twisted.plugins": ["downstream_plugin.py"],
    },
    include_package_data=True,
    # <prefix>/share/doc/downstream-tx/ keeps the checkout's layout, so the README's and the docs'
    # relative links work there too; the systemd units' Documentation= points at docs/operations.md in
    # it (/opt/downstream/share/doc/downstream-tx/docs/operations.md in the documented virtualenv).
    # <prefix>/share/downstream-tx/downstream.tac: `twistd -n -y` it (docs/operations.md, "Install").
    data_files=[("share/doc/downstream-tx", ["README.md", "LICENSE"]),
                ("share/doc/downstream-tx/docs", ["docs/operations.md", "docs/protocol-v0.md", "docs/protocol-v1.md",
                                                  "docs/performance.md", "docs/testing.md", "docs/openapi.yaml",
                                                  "docs/farmer.md", "docs/capacity.md", "docs/dashboard.png"]),
                ("share/doc/downstream-tx/contrib/systemd", ["contrib/systemd/downstream.service",
                                                             "contrib/systemd/downstream@.service",
                                                             "contrib/systemd/downstream.socket",
                                                             "contrib/systemd/downstream-socket-activated.conf",
                                                             "contrib/systemd/downstream-farmer.service"]),
                ("share/doc/downstream-tx/contrib/prometheus", ["contrib/prometheus/alerts.yml"]),
                ("share/doc/downstream-tx/contrib/loadbalancer", ["contrib/loadbalancer/haproxy.cfg"]),
                ("share/downstream-tx", ["downstream.tac"])],
    install_requires=[
        "Twisted[tls]>=24.3,<27",
        "klein>=24.8,<26",
        "treq>=24.9,<27",
        "PyMySQL>=1.1,<2",
        "cryptography>=42,<52",
        "coincurve>=20,<22",
        "base58>=2.1,<3",
        "orjson>=3.9,<4",
        "prometheus-client>=0.20,<1",
        "ijson>=3.2,<4",
        "geoip2fast>=1.2,<2",
        "maxminddb>=2.5,<4",
        "tqdm>=4.66,<5",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-twisted>=1.14,<2",
            "hypothesis>=6.100,<7",
            "schemathesis>=4,<5",
            "PyYAML>=6,<7",
            "ruff>=0.5",
            "playwright>=1.40,<2",
            "axe-playwright-python>=0.1.4,<0.2",
            "mmdb-writer>=0.2,<0.3",
        ],
    },
    cmdclass={"build_py": BuildWithCommit},
    entry_points={"console_scripts": ["downstream-admin = downstream_tx.admin:entry",
                                      "downstream-farmer = downstream_tx.farmer.main:entry"]},
    license="MIT",
    classifiers=["Framework :: Twisted", "Programming Language :: Python :: 3.11",
                 "License :: OSI Approved :: MIT License"],
)
