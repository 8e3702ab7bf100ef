//! Gantry's OpenAPI document, generated from the route table with utoipa's
//! document model, and served at `GET /api/openapi.json`.
//!
//! Invariants: the document lists exactly the routes the router serves,
//! with the paths, path and query parameters and body kinds the table
//! declares; each operation names its access rule (`x-gantry-access`), and
//! parameters Gantry adds to OSMO's are marked `x-gantry-only`.

use super::access::{Access, Target};
use super::routes::{Content, Kind, Route};
use axum::http::Method;
use serde_json::{json, Value};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApiBuilder, Paths, Required, ResponseBuilder, Schema,
};

/// The document of `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Paths::new();
    for route in routes {
        paths.add_path_operation(
            route.path,
            vec![http_method(&route.method)],
            operation(route),
        );
    }
    let document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Gantry")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Workflow orchestration for Physical AI; OSMO's paths and JSON shapes.",
                ))
                .build(),
        )
        .paths(paths)
        .build();
    serde_json::to_value(&document).unwrap_or_else(|error| {
        // The model is plain data; serializing it cannot fail in practice.
        json!({"error": format!("the document could not be built: {error}")})
    })
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Trace,
    }
}

fn schema_of(kind: Kind) -> Schema {
    match kind {
        Kind::String => ObjectBuilder::new().schema_type(Type::String).into(),
        Kind::Integer => ObjectBuilder::new().schema_type(Type::Integer).into(),
        Kind::Boolean => ObjectBuilder::new().schema_type(Type::Boolean).into(),
        Kind::List => ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String))
            .into(),
    }
}

/// `{name}` segments of a path, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// `get_api_workflow_name_logs` for `GET /api/workflow/{name}/logs`.
fn operation_id(route: &Route) -> String {
    let path: String = route
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let words: Vec<&str> = path.split('_').filter(|word| !word.is_empty()).collect();
    format!(
        "{}_{}",
        route.method.as_str().to_ascii_lowercase(),
        words.join("_")
    )
}

fn access_json(access: Access) -> Value {
    match access {
        Access::Open => json!({"open": true}),
        Access::ClusterSetup => {
            json!({"action": "cluster:Update", "resource": "*", "join_token_before_init": true})
        }
        Access::Rule { action, target } => {
            let resource = match target {
                Target::Fixed(resource) => resource.to_string(),
                Target::Param(prefix, name) => format!("{prefix}{{{name}}}"),
                Target::Caller => "user/{caller}".to_string(),
                Target::WorkflowPool => "pool/{pool of the workflow}".to_string(),
                Target::Query(prefix, name) => format!("{prefix}{{?{name}}}"),
            };
            json!({"action": action, "resource": resource})
        }
    }
}

fn content(kind: Content) -> utoipa::openapi::Content {
    let schema: Schema = match kind {
        Content::Json => ObjectBuilder::new().schema_type(Type::Object).into(),
        Content::Text => ObjectBuilder::new().schema_type(Type::String).into(),
        Content::Frames | Content::Archive => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into(),
    };
    ContentBuilder::new().schema(Some(schema)).build()
}

fn operation(route: &Route) -> utoipa::openapi::path::Operation {
    let mut builder = OperationBuilder::new()
        .operation_id(Some(operation_id(route)))
        .summary(Some(route.summary))
        .tag(route.tag());
    for name in path_parameters(route.path) {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schema_of(Kind::String))),
        );
    }
    for query in &route.query {
        let mut parameter = ParameterBuilder::new()
            .name(query.name)
            .parameter_in(ParameterIn::Query)
            .required(if query.required {
                Required::True
            } else {
                Required::False
            })
            .schema(Some(schema_of(query.kind)));
        if query.gantry_only {
            parameter = parameter.extensions(Some(
                ExtensionsBuilder::new().add("x-gantry-only", true).build(),
            ));
        }
        builder = builder.parameter(parameter);
    }
    if let Some(body) = route.body {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .content(body.media_type(), content(body))
                .required(Some(Required::True))
                .build(),
        ));
    }
    builder
        .response(
            "200",
            ResponseBuilder::new()
                .description("Success")
                .content(route.response.media_type(), content(route.response)),
        )
        .response(
            "default",
            ResponseBuilder::new()
                .description("An error: {message, error_code, workflow_id}")
                .content(Content::Json.media_type(), content(Content::Json)),
        )
        .extensions(Some(
            ExtensionsBuilder::new()
                .add("x-gantry-access", access_json(route.access))
                .build(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_parameters() {
        let routes = super::super::route_table::routes();
        let document = document(&routes);
        for route in &routes {
            let method = route.method.as_str().to_ascii_lowercase();
            let operation = &document["paths"][route.path][&method];
            assert!(
                operation.is_object(),
                "{} {} is missing from the document",
                route.method,
                route.path
            );
            let names: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for name in path_parameters(route.path) {
                assert!(names.contains(&name), "{} lacks {name}", route.path);
            }
            for query in &route.query {
                assert!(
                    names.contains(&query.name),
                    "{} lacks {}",
                    route.path,
                    query.name
                );
            }
            assert!(operation["x-gantry-access"].is_object());
        }
        assert_eq!(document["openapi"], "3.1.0");
    }

    #[test]
    fn operation_ids_are_unique() {
        let routes = super::super::route_table::routes();
        let mut ids: Vec<String> = routes.iter().map(operation_id).collect();
        ids.sort();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
