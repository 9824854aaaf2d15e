//! Texts too large for one response (a run's output, a tool call's result),
//! read in parts: `{offset, total_bytes, text, next_offset}`, each part at
//! most `PART_BYTES`, cut at character boundaries; concatenating the parts'
//! `text` gives the whole.

use serde::Deserialize;

use crate::domain::limits::PART_BYTES;

/// Where a part starts.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PartQuery {
    /// 0, or `next_offset` of the previous part.
    #[param(minimum = 0, maximum = 9007199254740991_i64, default = 0)]
    pub offset: Option<usize>,
}

/// Which text of a run (`output` or `raw_output`), and where a part starts.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// 0, or `next_offset` of the previous part.
    #[param(minimum = 0, maximum = 9007199254740991_i64, default = 0)]
    pub offset: Option<usize>,
    #[param(pattern = "^(output|raw_output)$", default = "output")]
    pub part: Option<String>,
}

pub use crate::domain::limits::prefix;

/// The part of `text` starting at byte `offset` (0, or an earlier part's
/// `next_offset`). An offset past the end gives the empty last part; one
/// inside a character starts at that character (the part says where).
pub fn part(text: &str, offset: usize) -> TextPart {
    let offset = prefix(text, offset).len();
    let chunk = prefix(&text[offset..], PART_BYTES);
    let end = offset + chunk.len();
    TextPart {
        offset,
        total_bytes: text.len(),
        text: chunk.to_owned(),
        next_offset: (end < text.len()).then_some(end),
    }
}

/// One part of a long text (`GET /v1/runs/{id}/output`, a tool call's
/// `result`).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TextPart {
    pub offset: usize,
    pub total_bytes: usize,
    /// At most 1 MiB; the parts' texts concatenated are the whole.
    pub text: String,
    /// Where the next part starts; `None` for the last.
    pub next_offset: Option<usize>,
}

/// Keeps the leading items whose JSON fits `budget` bytes (at least one);
/// true when some were left out.
pub fn fit<T: serde::Serialize>(items: &mut Vec<T>, budget: usize) -> bool {
    let mut used = 0;
    let mut keep = 0;
    for item in items.iter() {
        used += serde_json::to_vec(item).map_or(usize::MAX, |bytes| bytes.len()) + 1;
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    let cut = keep < items.len();
    items.truncate(keep);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_cover_the_text_at_character_boundaries() {
        let text = "é".repeat(PART_BYTES); // two bytes each
        let mut offset = 0;
        let mut whole = String::new();
        loop {
            let part = part(&text, offset);
            assert!(part.text.len() <= PART_BYTES);
            whole.push_str(&part.text);
            match part.next_offset {
                Some(next) => offset = next,
                None => break,
            }
        }
        assert_eq!(whole, text);
        assert_eq!(super::part(&text, 1).offset, 0, "inside a character");
        let past = super::part(&text, text.len() + 1);
        assert_eq!((past.text.as_str(), past.next_offset), ("", None));
        assert_eq!(prefix("héllo", 2), "h");
    }

    #[test]
    fn a_page_keeps_what_fits_and_at_least_one() {
        let big = json!("x".repeat(100));
        let mut items = vec![big.clone(), big.clone(), big.clone()];
        assert!(fit(&mut items, 250));
        assert_eq!(items.len(), 2);
        let mut one = vec![big.clone(), big];
        assert!(fit(&mut one, 10));
        assert_eq!(one.len(), 1);
    }
}
