//! The OpenAPI document, generated from the API's types and handlers:
//! `agentrun openapi --write` writes it to `shared/src/api/openapi.json`,
//! which `/openapi.json` serves, and a test fails when that file is stale.
//! The few shapes the derives cannot express (a value that is anything but
//! null, unique items, property names) are built here from the same limits
//! the server checks.

use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema};

use super::error::ErrorBody;
use crate::domain::limits::{MAX_HANDOFFS, MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS};
use crate::domain::AgentName;

/// Where the document is committed (from the workspace root).
pub const OPENAPI_PATH: &str = "shared/src/api/openapi.json";

const DESCRIPTION: &str = "Runs LLM agents as durable, observable, budgeted jobs. Authenticate with `Authorization: Bearer <team API key>`. Errors are `{\"error\": {\"code\", \"message\", \"details\", \"request_id\"}}`; every response carries `X-Request-Id` (the caller's own when it sends 1-128 printable ASCII characters, else a new one), and an error's `request_id` is the same. Every error, including a malformed query or body, a wrong method (405) or an oversized body (413 body_too_large, over 1 MiB), has that shape; a 5xx carries only a generic message (the cause is logged under the request id). Limits: input 256 KiB (413 input_too_large), metadata 16 KiB (413 metadata_too_large) with at most 64 keys (too_many_metadata_keys) of 1-128 characters (metadata_key_too_long); instructions 100,000 characters (instructions_too_long); 64 tools (too_many_tools), 32 handoffs (too_many_handoffs); schemas 64 KiB (schema_too_large) and 32 levels (schema_too_deep); numeric settings within the ranges below (value_out_of_range); 500 agents per team (409 too_many_agents) and 1,000 versions per agent (409 too_many_versions); pages of 1-200 (default 50), and at most 4 MiB (a page ends early with a next_cursor); an agent whose limits.timeout_seconds is longer than the deployment's state machine allows is refused (400 timeout_not_supported).";

#[derive(OpenApi)]
#[openapi(
    info(title = "agentrun API", version = "1", description = DESCRIPTION),
    paths(
        super::healthz,
        super::runs::create,
        super::runs::list,
        super::runs::show,
        super::runs::thread,
        super::runs::steps,
        super::events::stream,
        super::events::stream_token,
        super::runs::cancel,
        super::runs::output,
        super::runs::tool_result,
        super::runs::webhooks,
        super::approvals::list,
        super::approvals::answer,
        super::agents::list,
        super::agents::put,
        super::agents::show,
        super::usage::daily,
        super::usage::statement,
        super::admin::create_team,
        super::admin::list_teams,
        super::admin::show_team,
        super::admin::change_team,
        super::admin::issue_key,
        super::admin::list_keys,
        super::admin::revoke_key,
        super::admin::list_prices,
        super::admin::set_price,
        super::admin::list_plans,
        super::admin::set_plan,
        super::admin::reconcile,
        super::metrics,
    ),
    components(schemas(ErrorBody), responses(ErrorBody)),
    security(("bearer" = [])),
    modifiers(&Conventions)
)]
struct ApiDoc;

/// The document as committed and served: pretty JSON with a final newline.
pub fn render() -> String {
    let document = ApiDoc::openapi();
    let mut text = document.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// Statuses every operation may answer with the error body: a malformed
/// request, a missing or wrong key, a wrong method, the rate limit, and
/// the server's own trouble.
const COMMON_ERRORS: [&str; 6] = ["400", "401", "405", "429", "500", "503"];

/// What holds for every operation: the security schemes, the common
/// error statuses, and parameters and optional bodies that are absent
/// rather than null. And reads show an agent webhook's secret as
/// `secret_set` (`AgentSpec::redacted`).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, document: &mut Document) {
        if let Some(components) = document.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
            components.add_security_scheme(
                "admin",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("the operator's AGENTRUN_ADMIN_KEY"))
                        .build(),
                ),
            );
        }
        let webhook = document
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("WebhookSpec"));
        if let Some(RefOr::T(Schema::Object(webhook))) = webhook {
            let secret_set = ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .read_only(true)
                .description(Some("The webhook has a secret"));
            webhook
                .properties
                .insert("secret_set".to_owned(), secret_set.into());
        }
        for item in document.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let RefOr::T(parameter) = parameter {
                        if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
                            not_null(schema);
                        }
                    }
                }
                if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                    for content in body.content.values_mut() {
                        let RefOr::T(content) = content else { continue };
                        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                            let present = one_of.items.iter().find(|item| {
                                !matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
                            });
                            content.schema = present.cloned();
                        }
                    }
                }
                for status in COMMON_ERRORS {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Error")));
                }
            }
        }
    }
}

/// A parameter's schema without `null`: a parameter is absent, never null.
fn not_null(schema: &mut Object) {
    if let SchemaType::Array(types) = &schema.schema_type {
        let types: Vec<Type> = types
            .iter()
            .filter(|t| **t != Type::Null)
            .cloned()
            .collect();
        schema.schema_type = match types.as_slice() {
            [single] => SchemaType::Type(single.clone()),
            _ => SchemaType::Array(types),
        };
    }
}

fn string_enum(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// An agent's name as a string schema (also for property names).
pub fn agent_name_string() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(crate::domain::AGENT_NAME_PATTERN))
        .build()
}

/// `AgentSpec.handoffs`: distinct agent names.
pub fn handoffs() -> utoipa::openapi::Array {
    ArrayBuilder::new()
        .items(<AgentName as PartialSchema>::schema())
        .max_items(Some(MAX_HANDOFFS))
        .unique_items(true)
        .build()
}

/// A run's input: text, or any JSON value but null.
pub fn run_input() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Number,
            Type::Integer,
            Type::Boolean,
            Type::Array,
            Type::Object,
        ]))
        .description(Some(
            "Text, or any JSON value but null (sent to the model as JSON text); at most 256 KiB as JSON",
        ))
        .build()
}

/// A run's metadata: string keys of bounded length.
pub fn run_metadata() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(MAX_METADATA_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_METADATA_KEY_CHARS)),
        ))
        .description(Some("At most 16 KiB as JSON"))
        .build()
}

pub fn output_part_name() -> Object {
    string_enum(&["output", "raw_output"])
}

pub fn health_status() -> Object {
    string_enum(&["ok", "degraded"])
}

pub fn hot_store_state() -> Object {
    string_enum(&["unreachable"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_openapi_document_is_up_to_date() {
        assert!(
            include_str!("openapi.json") == render(),
            "{OPENAPI_PATH} is stale: run `cargo run --bin agentrun -- openapi --write`"
        );
    }
}
