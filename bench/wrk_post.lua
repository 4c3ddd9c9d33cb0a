-- POST a small chat completion. Env: BENCH_PATH, BENCH_KEY, BENCH_MODEL.
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "sk-bench-client-key-123")
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-4o-mini") ..
  '","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
