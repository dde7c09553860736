# Evaluates a GITLAB_OMNIBUS_CONFIG (Ruby, as omnibus evaluates /etc/gitlab/gitlab.rb) against
# recording stand-ins, and prints as JSON every setting it assigns, with its value, and every
# secret file it reads. Used by tests/compose/test_gitlab_settings.py; reads the config on stdin.
# Settings are assigned in gitlab.rb as <top>['key']...['key'] = value, or `external_url 'URL'`
# (omnibus-gitlab files/gitlab-config-template/gitlab.rb.template).
require 'json'

class Setting
  def initialize(path, log)
    @path = path
    @log = log
    @children = {}
  end

  def [](key)
    @children[key] ||= Setting.new("#{@path}['#{key}']", @log)
  end

  def []=(key, value)
    @log << ["#{@path}['#{key}']", value]
  end
end

SECRETS_READ = []
module SecretFiles
  def read(path, *rest)
    return super unless path.to_s.start_with?('/run/secrets/')
    SECRETS_READ << path.to_s.delete_prefix('/run/secrets/')
    "secret-from-#{path}\n"
  end
end
File.singleton_class.prepend(SecretFiles)

class GitlabRb
  attr_reader :log

  def initialize
    @log = []
    @tops = {}
  end

  def external_url(url)
    @log << ['external_url', url]
  end

  def method_missing(name, *args)
    return super unless args.empty? && name.to_s.match?(/\A[a-z_]+\z/)
    @tops[name] ||= Setting.new(name.to_s, @log)
  end

  def respond_to_missing?(name, include_private = false)
    name.to_s.match?(/\A[a-z_]+\z/) || super
  end
end

rb = GitlabRb.new
rb.instance_eval($stdin.read, 'GITLAB_OMNIBUS_CONFIG', 1)
puts JSON.generate({ 'settings' => rb.log, 'secrets' => SECRETS_READ })
