//! A small Server-Sent Events parser for the CLI and tests.

/// One parsed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Feeds bytes in, takes complete events out.
#[derive(Default)]
pub struct SseParser {
    buffer: String,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ParsedEvent> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut event = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                events.push(ParsedEvent {
                    id,
                    event,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_frames_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": keep-alive\n\nid: 1\nevent: run.qu")
            .is_empty());
        let events = parser.push(b"eued\ndata: {\"a\":1}\n\nid: 2\ndata: x\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].event, "run.queued");
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].event, "message");
    }
}
