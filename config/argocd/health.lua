-- Argo CD health check for PamElevation (pam.mim.dev/v1alpha1), from its kstatus conditions.
-- Healthy: the request is tracked and open, or it was closed as desired.
-- Progressing: the operator has not caught up yet, a first read or a close is being retried,
--              or the object is being deleted while its request is closed.
-- Degraded: a person must act (Stalled): credentials refused, request not found, server or
--           Secret missing, a duplicate of another PamElevation.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Closing the PAM request before the object goes"
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.metadata.generation == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    return {status = "Degraded", message = c.reason .. ": " .. (c.message or "")}
  end
  if c.type == "Ready" then
    ready = c
  end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Reconciling" and c.status == "True" then
    return {status = "Progressing", message = c.reason .. ": " .. (c.message or "")}
  end
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.reason .. ": " .. (ready.message or "")}
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
