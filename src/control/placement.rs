//! Where a task runs on a cluster backend, from the replicated configs: its
//! platform (the spec's, else the pool's default), that platform's node
//! selector and tolerations, and the pod templates in OSMO's merge order
//! (the pool's `common_pod_template`, then the platform's
//! `override_pod_template`), each name resolved to its POD_TEMPLATE body.
//!
//! Invariants: reads one consistent view and writes nothing; a platform or
//! pod template that a pool names but that does not exist is an error naming
//! it (the group fails), never silently left out; a pool known only by its
//! routing row has platforms without selectors and no templates; a pool
//! without platforms selects nothing, whatever platform a task names.

use gantry_storage::{ConfigData, ConfigType, PlatformConfig, PoolConfig, ReadView, Toleration};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The placement parts of a task that come from configs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub platform: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes `Toleration` objects.
    pub tolerations: Vec<Value>,
    /// Partial Pod manifests, in merge order.
    pub pod_templates: Vec<Value>,
}

/// The pool of one workflow, loaded once per launch.
pub struct PoolPlacement {
    /// `None`: the pool has neither a POOL config nor a routing row.
    pool: Option<PoolConfig>,
    /// Resolutions by requested platform, so a group of many tasks reads
    /// each template once.
    resolved: BTreeMap<Option<String>, Resolved>,
}

impl PoolPlacement {
    pub fn load(view: &ReadView, pool_name: &str) -> Result<PoolPlacement, String> {
        let configured = view
            .config(ConfigType::Pool, pool_name)
            .map_err(|error| error.to_string())?
            .and_then(|revision| revision.data)
            .and_then(ConfigData::into_pool);
        let pool = match configured {
            Some(pool) => Some(pool),
            None => view
                .pool(pool_name)
                .map_err(|error| error.to_string())?
                .map(|record| PoolConfig::from_record(&record)),
        };
        Ok(PoolPlacement {
            pool,
            resolved: BTreeMap::new(),
        })
    }

    /// The placement of a task that asked for `platform` (`None`: the
    /// pool's default).
    pub fn resolve(&mut self, view: &ReadView, platform: Option<&str>) -> Result<Resolved, String> {
        let wanted = platform.map(str::to_string);
        if let Some(found) = self.resolved.get(&wanted) {
            return Ok(found.clone());
        }
        let resolved = match &self.pool {
            Some(pool) => resolve_in(view, pool, platform)?,
            None => Resolved {
                platform: wanted.clone(),
                ..Resolved::default()
            },
        };
        self.resolved.insert(wanted, resolved.clone());
        Ok(resolved)
    }
}

fn resolve_in(
    view: &ReadView,
    pool: &PoolConfig,
    platform: Option<&str>,
) -> Result<Resolved, String> {
    let name = platform.or(pool.default_platform.as_deref());
    let chosen: Option<(&str, &PlatformConfig)> = match name {
        // A pool without platforms covers all its backend's nodes (as
        // submission checks it): the name is kept, nothing is selected.
        _ if pool.platforms.is_empty() => None,
        None => None,
        Some(name) => {
            let Some(config) = pool.platforms.get(name) else {
                let known: Vec<&str> = pool.platforms.keys().map(String::as_str).collect();
                return Err(format!(
                    "platform '{name}' is not a platform of pool '{}' (platforms: {})",
                    pool.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            Some((name, config))
        }
    };
    let mut pod_templates = Vec::new();
    for template in &pool.common_pod_template {
        pod_templates.push(pod_template(
            view,
            template,
            &format!("pool '{}' common_pod_template", pool.name),
        )?);
    }
    if let Some((platform, config)) = chosen {
        for template in &config.override_pod_template {
            pod_templates.push(pod_template(
                view,
                template,
                &format!(
                    "platform '{platform}' of pool '{}' override_pod_template",
                    pool.name
                ),
            )?);
        }
    }
    Ok(Resolved {
        platform: name.map(str::to_string),
        node_selector: chosen
            .map(|(_, config)| config.labels.clone())
            .unwrap_or_default(),
        tolerations: chosen
            .map(|(_, config)| config.tolerations.iter().map(toleration_json).collect())
            .unwrap_or_default(),
        pod_templates,
    })
}

/// The body of POD_TEMPLATE `name`, which `named_by` lists.
fn pod_template(view: &ReadView, name: &str, named_by: &str) -> Result<Value, String> {
    let revision = view
        .config(ConfigType::PodTemplate, name)
        .map_err(|error| error.to_string())?;
    let text = match revision.and_then(|revision| revision.data) {
        Some(ConfigData::Json(text)) => text,
        _ => {
            return Err(format!(
                "{named_by} names pod template '{name}', which does not exist \
                 (create it with `gantry config update POD_TEMPLATE {name}`)"
            ))
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(format!(
            "pod template '{name}' is not a JSON object (part of a Pod manifest)"
        )),
        Err(error) => Err(format!("pod template '{name}' is not valid JSON: {error}")),
    }
}

/// A platform toleration as a Kubernetes `Toleration`; unset fields are left out.
fn toleration_json(toleration: &Toleration) -> Value {
    let mut object = Map::new();
    if !toleration.key.is_empty() {
        object.insert("key".into(), Value::String(toleration.key.clone()));
    }
    if !toleration.operator.is_empty() {
        object.insert(
            "operator".into(),
            Value::String(toleration.operator.clone()),
        );
    }
    if let Some(value) = &toleration.value {
        object.insert("value".into(), Value::String(value.clone()));
    }
    if let Some(effect) = &toleration.effect {
        object.insert("effect".into(), Value::String(effect.clone()));
    }
    Value::Object(object)
}
