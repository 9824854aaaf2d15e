//! The API's contract, checked on what the end-to-end tests receive: every
//! JSON body that passes through the `TestApp` helpers is validated against
//! the response schema the OpenAPI document (`/openapi.json`, the file the
//! server serves) gives for its method, path and status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::from_str(include_str!("../../shared/src/api/openapi.json"))
            .expect("openapi.json is JSON")
    })
}

/// The document's path template `path` matches, the one with the most
/// literal segments when several do.
fn template(path: &str) -> Option<&'static str> {
    let wanted: Vec<&str> = path.split('/').collect();
    let paths = document()["paths"].as_object()?;
    paths
        .keys()
        .filter_map(|template| {
            let segments: Vec<&str> = template.split('/').collect();
            if segments.len() != wanted.len() {
                return None;
            }
            let mut literal = 0;
            for (segment, got) in segments.iter().zip(&wanted) {
                if segment.starts_with('{') && segment.ends_with('}') {
                    if got.is_empty() {
                        return None;
                    }
                } else if segment == got {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template)
}

fn resolve(value: &'static Value) -> &'static Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            document().pointer(pointer).unwrap_or(&Value::Null)
        }
        None => value,
    }
}

type Compiled = Arc<jsonschema::Validator>;

fn validator(key: String, schema: &Value) -> Compiled {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap().get(&key) {
        return found.clone();
    }
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".to_owned(), document()["components"].clone());
    }
    let compiled = Arc::new(
        jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("the schema for {key} does not compile: {e}")),
    );
    cache.lock().unwrap().insert(key, compiled.clone());
    compiled
}

/// Panics unless `body`, answered with `status` to `method path`, is what
/// the document says that answer is.
pub fn check_response(method: &str, path: &str, status: u16, body: &Value) {
    let path = path.split('?').next().unwrap_or(path);
    let error = &document()["components"]["schemas"]["Error"];
    let schema = match template(path) {
        // An unknown route is a 404 in the error envelope.
        None => {
            assert_eq!(
                status, 404,
                "{method} {path} is not in the OpenAPI document"
            );
            error
        }
        Some(template) => {
            let operation = &document()["paths"][template][method.to_ascii_lowercase()];
            if operation.is_null() {
                assert_eq!(
                    status, 405,
                    "{method} {template} is not in the OpenAPI document"
                );
                error
            } else {
                let responses = &operation["responses"];
                let response = responses
                    .get(status.to_string())
                    .or_else(|| responses.get("default"))
                    .unwrap_or_else(|| {
                        panic!("{method} {template} answered {status}, which the document does not list")
                    });
                match resolve(response)["content"]["application/json"]["schema"] {
                    Value::Null => return,
                    ref schema => schema,
                }
            }
        }
    };
    let key = format!("{method} {} {status}", template(path).unwrap_or("?"));
    let validator = validator(key.clone(), schema);
    let problems: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{key}: the body does not match the OpenAPI document: {problems:?}\n{body}"
    );
}
