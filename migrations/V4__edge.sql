-- A tool response longer than the tool's cap is stored cut at the cap.
ALTER TABLE tool_calls ADD COLUMN truncated boolean NOT NULL DEFAULT false;
