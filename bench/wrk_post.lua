-- POST a chat completion. Env: BENCH_PATH, BENCH_KEY, BENCH_MODEL; BENCH_BODY (the whole body,
-- e.g. the 2 KB chat of the translation scenarios) replaces the small default body.
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "sk-bench-client-key-123")
wrk.body = os.getenv("BENCH_BODY") or ('{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-4o-mini") ..
  '","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}')
