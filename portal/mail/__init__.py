"""Mail: templates rendered, the outbox, delivery by SMTP or webhook, the worker that sends."""
