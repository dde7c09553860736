"""Test and demo doubles shipped with the agent: the GitLab simulator (`autogit-agent demo`)."""

from .gitlab_sim import GitLabSimulator, SimJob, SimProject, SimRunner, WebhookTarget

__all__ = ["GitLabSimulator", "SimJob", "SimProject", "SimRunner", "WebhookTarget"]
