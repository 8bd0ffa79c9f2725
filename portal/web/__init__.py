"""HTTP only: routes, forms, pages, middleware; each handler calls one function below it."""
