// Decodes config.toml files with BurntSushi/toml at the version gitlab-runner v17.11.3 requires
// (its go.mod), into Go types generated from gitlab_double/runner_image/config_types.tsv
// (types.go is written by tests/unit/test_runner_config_go.py before it builds this).
module autogit.test/configcheck

go 1.23

require github.com/BurntSushi/toml v1.4.0
