//! Workflow spec: parse, template, validate and expand OSMO version-2 YAML.
