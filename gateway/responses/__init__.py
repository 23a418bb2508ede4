"""The Responses API (`/v1/responses`): its routes, its rendering and its stored responses."""
