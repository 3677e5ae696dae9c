package gateway

import "net/http"

// serveStream is POST /api/v1/stream (being written).
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not_found", "token streaming is not available in this version of the server")
}
