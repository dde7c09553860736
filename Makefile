# AutoGit developer targets. `make deb` builds the Debian package into dist/ (ADR-005).
#
#   make deb                      dist/autogit-agent_<version>_<arch>.deb and the demo's
#                                 dist/autogit-agent-demo_<version>_all.deb, then lintian
#   make deb SYSTEMD_DIR=DIR      take the unit/sysusers/tmpfiles files from DIR, not systemd/
#   make lock                     re-pin packaging/requirements.lock from pyproject.toml
#   make clean-deb                remove debian-build/ and dist/*.deb
#
# The build copies the working tree (tracked and untracked-but-not-ignored files) into
# debian-build/src, puts packaging/debian there as debian/, and runs dpkg-buildpackage in it:
# no debian/ directory ever appears at the top of the repository.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PKG         := autogit-agent
BUILD_DIR   := debian-build
DIST_DIR    := dist
SYSTEMD_DIR ?= systemd
LINTIAN     ?= 1
PY_VERSION  := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)
DEB_VERSION := $(shell dpkg-parsechangelog -l packaging/debian/changelog -S Version 2>/dev/null)
DEB_ARCH    := $(shell dpkg-architecture -qDEB_HOST_ARCH 2>/dev/null)
DEB_FILE    := $(DIST_DIR)/$(PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb
DEMO_FILE   := $(DIST_DIR)/$(PKG)-demo_$(DEB_VERSION)_all.deb

.PHONY: help deb lint-deb lock clean-deb

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh_virtualenv >/dev/null || \
	  { echo "make deb: needs dpkg-dev, debhelper, dh-virtualenv (run scripts/dev-setup)" >&2; exit 1; }
	@[ -n "$(DEB_VERSION)" ] && \
	  [ "$(firstword $(subst -, ,$(DEB_VERSION)))" = "$(PY_VERSION)" ] || \
	  { echo "make deb: packaging/debian/changelog ($(DEB_VERSION)) does not match pyproject.toml ($(PY_VERSION)); add a changelog entry" >&2; exit 1; }
	@for f in service sysusers tmpfiles; do [ -f "$(SYSTEMD_DIR)/$(PKG).$$f" ] || \
	  { echo "make deb: $(SYSTEMD_DIR)/$(PKG).$$f is missing" >&2; exit 1; }; done
	rm -rf $(BUILD_DIR) && mkdir -p $(BUILD_DIR)/src $(DIST_DIR)
	git ls-files -z --cached --others --exclude-standard | \
	  while IFS= read -r -d '' f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done | \
	  tar --null -T - -cf - | tar -C $(BUILD_DIR)/src -xf -
	cp -a packaging/debian $(BUILD_DIR)/src/debian
	for f in service sysusers tmpfiles; do cp "$(SYSTEMD_DIR)/$(PKG).$$f" "$(BUILD_DIR)/src/debian/$(PKG).$$f"; done
	cd $(BUILD_DIR)/src && dpkg-buildpackage -us -uc -b
	mv $(BUILD_DIR)/$(PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb $(BUILD_DIR)/$(PKG)-demo_$(DEB_VERSION)_all.deb $(DIST_DIR)/
	@ls -l $(DEB_FILE) $(DEMO_FILE)
	@if [ "$(LINTIAN)" = 1 ]; then $(MAKE) --no-print-directory lint-deb; fi

lint-deb:
	lintian --fail-on error,warning --display-info $(DEB_FILE) $(DEMO_FILE)

lock:
	rm -rf $(BUILD_DIR)/lockvenv && /usr/bin/python3 -m venv $(BUILD_DIR)/lockvenv
	$(BUILD_DIR)/lockvenv/bin/pip install -q --disable-pip-version-check .
	{ sed -n '/^#/p' packaging/requirements.lock; \
	  $(BUILD_DIR)/lockvenv/bin/pip freeze --all --exclude autogit | grep -vE '^(pip|setuptools)=='; \
	} > packaging/requirements.lock.new && mv packaging/requirements.lock.new packaging/requirements.lock
	rm -rf $(BUILD_DIR)/lockvenv
	@git diff --stat packaging/requirements.lock || true

clean-deb:
	rm -rf $(BUILD_DIR) $(DIST_DIR)/$(PKG)_*.deb $(DIST_DIR)/$(PKG)-demo_*.deb
