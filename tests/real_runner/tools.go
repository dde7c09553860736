//go:build tools

// Package realrunner pins the gitlab-runner version to build: v17.11.3, the version of the
// agent's default runner image (commit 3995fbff406e2fc83e4cb22c86d3071dd37cfaa1).
package realrunner

import (
	_ "gitlab.com/gitlab-org/gitlab-runner"
	_ "gitlab.com/gitlab-org/gitlab-runner/apps/gitlab-runner-helper"
)
