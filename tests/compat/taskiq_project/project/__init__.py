"""A FastAPI + Taskiq service, moved to conveyor by changing its imports only."""
