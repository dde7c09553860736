// A wrapper module that builds the real gitlab-runner and its helper from the Go module proxy
// (scripts/build-real-runner). gitlab-runner's own go.mod has a `replace`, so `go install
// module@version` refuses it; a module that requires it builds its main packages instead.
module autogit.test/realrunner

go 1.23.6

require gitlab.com/gitlab-org/gitlab-runner v1.11.1-0.20250611182106-3995fbff406e
